from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.db import IntegrityError, transaction
from hypothesis import given, settings
from hypothesis import strategies as st

from billing import services
from billing.catalog import PriceBook, price_at
from billing.models import Model, Price, Subscription
from billing.money import round_display_amount, round_event_amount
from billing.rating import event_cost
from billing.selectors import current_subscription
from portal.services import SYSTEM
from tests import factories

T0 = datetime(2025, 1, 1, tzinfo=UTC)
T1 = datetime(2025, 6, 1, tzinfo=UTC)
T2 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def priced_model(db):
    model = factories.make_model("qwen-plus", cny=("3", "0.6", "6", "0", "0"), effective_from=T0)
    factories.add_price(model, "CNY", T1, ("2", "0.4", "5", "0", "0"))
    factories.add_price(model, "CNY", T2, ("1", "0.2", "4", "0", "0"))
    return model


def test_model_codes_are_unique(db):
    factories.make_model("qwen-max")
    with pytest.raises(IntegrityError), transaction.atomic():
        Model.objects.create(code="qwen-max", name="Dup", provider="x")


@pytest.mark.parametrize(
    "when, expected_input",
    [
        (T0 - timedelta(seconds=1), None),
        (T0, "3"),
        (T1 - timedelta(microseconds=1), "3"),
        (T1, "2"),
        (T2 + timedelta(days=400), "1"),
    ],
    ids=["before-any-price", "first-instant", "just-before-change", "at-change", "long-after"],
)
def test_price_of_model_in_currency_at_time(priced_model, when, expected_input):
    price = price_at(priced_model, "CNY", when)
    assert (price.input_per_mtok if price else None) == (Decimal(expected_input) if expected_input else None)
    book = PriceBook([priced_model.pk], "CNY")
    assert book.at(priced_model.pk, when) == price


def test_prices_are_per_currency(priced_model):
    assert price_at(priced_model, "USD", T2).input_per_mtok == Decimal("3")  # the factory's USD row
    assert price_at(priced_model, "VCU", T2) is None


def test_price_history_is_ordered_newest_first(priced_model):
    starts = list(Price.objects.filter(model=priced_model, currency="CNY").values_list("effective_from", flat=True))
    assert starts == [T2, T1, T0]


def test_adding_the_same_price_instant_twice_changes_nothing(priced_model):
    again = factories.add_price(priced_model, "CNY", T1, ("9", "9", "9", "0", "0"))
    assert again.input_per_mtok == Decimal("2")
    assert Price.objects.filter(model=priced_model, currency="CNY").count() == 3


def test_two_prices_for_the_same_instant_are_refused_by_the_database(priced_model):
    with pytest.raises(IntegrityError), transaction.atomic():
        Price.objects.create(model=priced_model, currency="CNY", effective_from=T1)


def test_a_negative_price_is_refused_by_the_database(priced_model):
    with pytest.raises(IntegrityError), transaction.atomic():
        Price.objects.create(model=priced_model, currency="CNY", effective_from=T2 + timedelta(days=1),
                             input_per_mtok=Decimal("-1"))


@settings(max_examples=60, deadline=None)
@given(offset_days=st.integers(min_value=-30, max_value=900))
def test_price_book_agrees_with_price_at(offset_days, django_db_blocker):
    with django_db_blocker.unblock():
        model = Model.objects.get(code="qwen-plus")
        when = T0 + timedelta(days=offset_days)
        assert PriceBook([model.pk], "CNY").at(model.pk, when) == price_at(model, "CNY", when)


@pytest.fixture(autouse=True)
def _hypothesis_model(request, db):
    # The property test above reads this model; it lives in the per-test transaction.
    if request.function.__name__ == "test_price_book_agrees_with_price_at":
        model = factories.make_model("qwen-plus", cny=("3", "0.6", "6", "0", "0"), effective_from=T0)
        factories.add_price(model, "CNY", T1, ("2", "0.4", "5", "0", "0"))


def test_event_cost_follows_the_documented_formula(db):
    model = factories.make_model("vision", cny=("2", "0.5", "8", "0.14", "0.5"))
    price = price_at(model, "CNY", T2)
    cost = event_cost(price, discount=Decimal("0.9"), prompt_tokens=1000, cached_tokens=400,
                      completion_tokens=250, image_count=2, video_seconds=3)
    # ((600×2 + 400×0.5 + 250×8) / 1e6 + 2×0.14 + 3×0.5) × 0.9
    expected = (Decimal(600 * 2 + 400 * Decimal("0.5") + 250 * 8) / Decimal(10**6)
                + Decimal("0.28") + Decimal("1.5")) * Decimal("0.9")
    assert cost == expected.quantize(Decimal("0.00000001"))
    assert cost == Decimal("1.60506000")


@pytest.mark.parametrize("cache_write_price, per_mtok", [("3.75", Decimal("3.75")), (None, Decimal("3"))],
                         ids=["its-own-price", "falls-back-to-input"])
def test_cache_writes_are_part_of_the_prompt_at_the_cache_write_price(db, cache_write_price, per_mtok):
    prices = ("3", "0.3", "15", "0", "0", *((cache_write_price,) if cache_write_price else ()))
    price = price_at(factories.make_model("claude-like", cny=prices), "CNY", T2)
    cost = event_cost(price, discount=Decimal("0.9"), prompt_tokens=10_000, cached_tokens=2_000,
                      cache_creation_tokens=5_000, completion_tokens=700, image_count=0, video_seconds=0)
    # ((10,000 − 2,000 − 5,000) × 3 + 2,000 × 0.3 + 5,000 × cache write + 700 × 15) / 1e6 × 0.9
    expected = (3_000 * 3 + 2_000 * Decimal("0.3") + 5_000 * per_mtok + 700 * 15) / Decimal(10**6) * Decimal("0.9")
    assert cost == expected.quantize(Decimal("0.00000001"))


@pytest.mark.parametrize(
    "raw, event_amount, display_amount",
    [("0.000000005", "0.00000001", "0.00"), ("1.005", "1.00500000", "1.01"), ("2.344999999", "2.34500000", "2.34")],
    ids=["half-up-at-8", "half-up-at-2", "display-from-raw"],
)
def test_rounding_rules(raw, event_amount, display_amount):
    assert round_event_amount(Decimal(raw)) == Decimal(event_amount)
    assert round_display_amount(Decimal(raw)) == Decimal(display_amount)


def test_an_organization_has_one_active_subscription(world):
    team, pro = factories.make_plan("team"), factories.make_plan("pro")
    services.subscribe(actor=SYSTEM, organization=world.acme, plan=team, started_at=T0)
    services.subscribe(actor=SYSTEM, organization=world.acme, plan=pro, started_at=T1)
    assert current_subscription(world.acme).plan == pro
    assert world.acme.subscriptions.filter(status="cancelled").get().plan == team
    with pytest.raises(IntegrityError), transaction.atomic():
        Subscription.objects.create(organization=world.acme, plan=team, started_at=T2)


def test_expiring_subscriptions_is_idempotent(world):
    plan = factories.make_plan()
    services.subscribe(actor=SYSTEM, organization=world.acme, plan=plan, started_at=T0, expires_at=T1)
    services.subscribe(actor=SYSTEM, organization=world.globex, plan=plan, started_at=T0, expires_at=None)
    assert services.expire_subscriptions(now=T2) == 1
    assert services.expire_subscriptions(now=T2) == 0
    assert world.acme.subscriptions.get().status == "expired"
    assert world.globex.subscriptions.get().status == "active"


def test_every_organization_gets_one_billing_account_with_a_currency(world):
    assert world.acme.billing_account.currency == "CNY"
    assert world.globex.billing_account.currency == "USD"
    again = services.open_billing_account(actor=SYSTEM, organization=world.acme, currency="USD")
    assert again.currency == "CNY"  # opening twice returns the existing account unchanged


@pytest.mark.parametrize("quantities", [
    dict(prompt_tokens=1000, cached_tokens=400, completion_tokens=250, image_count=2, video_seconds=3),
    dict(prompt_tokens=1, cached_tokens=0, completion_tokens=1, image_count=0, video_seconds=0),
    dict(prompt_tokens=333, cached_tokens=111, completion_tokens=0, image_count=0, video_seconds=0),
    dict(prompt_tokens=777, cached_tokens=111, cache_creation_tokens=333, completion_tokens=9, image_count=1,
         video_seconds=0),
], ids=["everything", "one-token-each", "no-output", "cache-writes"])
def test_the_cost_parts_add_up_to_the_cost(db, quantities):
    from billing.rating import rate

    model = factories.make_model("parts", cny=("0.7", "0.33", "2.9", "0.14", "0.5", "0.87"))
    cost = rate(price_at(model, "CNY", T2), discount=Decimal("0.9"), **quantities)
    assert cost.input + cost.cache_read + cost.cache_write + cost.output + cost.units == cost.total
    assert cost.total == event_cost(price_at(model, "CNY", T2), discount=Decimal("0.9"), **quantities)
    assert min(cost.input, cost.cache_read, cost.cache_write, cost.output, cost.units) >= 0
