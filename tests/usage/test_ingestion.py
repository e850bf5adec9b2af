from datetime import UTC, datetime
from decimal import Decimal

import pytest

from tests import factories
from usage.models import UsageEvent
from usage.services import IngestValidationError, ingest_events


@pytest.fixture
def setup(world):
    model = factories.make_model("qwen-plus", cny=("2", "0.5", "8", "0", "0"), usd=("0.3", "0.1", "1", "0", "0"))
    key, _ = factories.make_inference_key(world.research, owner=world.bob)
    discounted = factories.make_department(world.acme, "Marketing", discount=Decimal("0.9"))
    cheap_key, _ = factories.make_inference_key(discounted)
    globex_key, _ = factories.make_inference_key(world.sales)
    return world, model, key, cheap_key, globex_key


def test_an_event_is_resolved_rated_and_frozen(setup):
    world, model, key, cheap_key, globex_key = setup
    result = ingest_events([factories.event(key, model, request_id="r1", prompt_tokens=1000, cached_tokens=200,
                                            completion_tokens=100, timestamp=1767225600)])
    assert (result.accepted, result.duplicates) == (1, 0)
    stored = UsageEvent.objects.get(request_id="r1")
    assert stored.organization == world.acme and stored.department == world.research
    assert stored.member == world.bob and stored.key == key
    assert stored.timestamp == datetime(2026, 1, 1, tzinfo=UTC)
    assert stored.currency == "CNY"
    assert stored.cost == Decimal("0.00250000")  # (800×2 + 200×0.5 + 100×8) / 1e6


@pytest.fixture
def cache_writing_model(db):
    # Anthropic-style: a cache write costs more than plain input, a cache read far less.
    return factories.make_model("claude-like", cny=("3", "0.3", "15", "0", "0", "3.75"))


def test_cache_writes_are_rated_at_the_cache_write_price(setup, cache_writing_model):
    world, model, key, cheap_key, globex_key = setup
    ingest_events([factories.event(key, cache_writing_model, request_id="writes", prompt_tokens=10_000,
                                   cached_tokens=2_000, cache_creation_tokens=5_000, completion_tokens=1_000),
                   factories.event(cheap_key, cache_writing_model, request_id="discounted", prompt_tokens=10_000,
                                   cached_tokens=2_000, cache_creation_tokens=5_000, completion_tokens=1_000)])
    stored = UsageEvent.objects.get(request_id="writes")
    assert stored.cache_creation_tokens == 5_000
    # (3,000 × 3 + 2,000 × 0.3 + 5,000 × 3.75 + 1,000 × 15) / 1e6
    assert stored.cost == Decimal("0.04335000")
    assert (stored.input_cost, stored.cache_read_cost, stored.cache_write_cost, stored.output_cost) == (
        Decimal("0.00900000"), Decimal("0.00060000"), Decimal("0.01875000"), Decimal("0.01500000"))
    assert UsageEvent.objects.get(request_id="discounted").cost == Decimal("0.03901500")  # × 0.9


def test_without_a_cache_write_price_cache_writes_cost_as_input(setup):
    world, model, key, *_ = setup
    ingest_events([factories.event(key, model, request_id="plain", prompt_tokens=1000, cached_tokens=200,
                                   completion_tokens=100),
                   factories.event(key, model, request_id="written", prompt_tokens=1000, cached_tokens=200,
                                   cache_creation_tokens=500, completion_tokens=100)])
    plain, written = UsageEvent.objects.get(request_id="plain"), UsageEvent.objects.get(request_id="written")
    assert plain.cost == written.cost == Decimal("0.00250000")
    assert (written.input_cost, written.cache_write_cost) == (Decimal("0.00060000"), Decimal("0.00100000"))
    assert plain.cache_creation_tokens == 0


def test_the_department_discount_and_the_account_currency_apply(setup):
    world, model, key, cheap_key, globex_key = setup
    ingest_events([factories.event(cheap_key, model, request_id="cheap", prompt_tokens=10**6, completion_tokens=0),
                   factories.event(globex_key, model, request_id="usd", prompt_tokens=10**6, completion_tokens=0)])
    assert UsageEvent.objects.get(request_id="cheap").cost == Decimal("1.80000000")
    usd = UsageEvent.objects.get(request_id="usd")
    assert (usd.cost, usd.currency, usd.organization) == (Decimal("0.30000000"), "USD", world.globex)


def test_replayed_events_are_counted_as_duplicates_not_stored_twice(setup):
    world, model, key, *_ = setup
    batch = [factories.event(key, model, request_id=f"r{i}") for i in range(3)]
    assert ingest_events(batch).accepted == 3
    again = ingest_events(batch + [factories.event(key, model, request_id="r-new")])
    assert (again.accepted, again.duplicates) == (1, 3)
    assert UsageEvent.objects.count() == 4


def test_a_repeat_inside_one_batch_is_a_duplicate(setup):
    world, model, key, *_ = setup
    same = factories.event(key, model, request_id="same")
    result = ingest_events([same, dict(same)])
    assert (result.accepted, result.duplicates) == (1, 1)


@pytest.mark.parametrize(
    "override, field",
    [
        ({"prompt_tokens": -1}, "prompt_tokens"),
        ({"prompt_tokens": "12"}, "prompt_tokens"),
        ({"completion_tokens": True}, "completion_tokens"),
        ({"cached_tokens": 2000}, "cached_tokens"),
        ({"cache_creation_tokens": 1001}, "cache_creation_tokens"),
        ({"cached_tokens": 600, "cache_creation_tokens": 401}, "cache_creation_tokens"),
        ({"cache_creation_tokens": -1}, "cache_creation_tokens"),
        ({"cache_creation_tokens": None}, "cache_creation_tokens"),
        ({"timestamp": "2026-03-01T10:00:00"}, "timestamp"),
        ({"timestamp": "yesterday"}, "timestamp"),
        ({"key_id": "not-a-uuid"}, "key_id"),
        ({"key_id": "00000000-0000-0000-0000-000000000000"}, "key_id"),
        ({"key_id": ["a", "list"]}, "key_id"),
        ({"key_id": {"an": "object"}}, "key_id"),
        ({"model": "no-such-model"}, "model"),
        ({"status_code": 99}, "status_code"),
        ({"request_id": "x" * 129}, "request_id"),
        ({"trace_id": 5}, "trace_id"),
        ({"surprise": 1}, "surprise"),
        ({"latency_ms": None}, "latency_ms"),
    ],
    ids=["negative", "string-count", "bool-count", "cached-over-prompt", "cache-writes-over-prompt",
         "cache-reads-and-writes-over-prompt", "negative-cache-writes", "null-cache-writes", "naive-time",
         "garbage-time",
         "bad-key-uuid", "unknown-key", "list-key", "object-key", "unknown-model", "bad-status", "long-request-id",
         "non-string-trace",
         "unknown-field", "missing-latency"],
)
def test_one_bad_event_rejects_the_batch_and_stores_nothing(setup, override, field):
    world, model, key, *_ = setup
    ingest_events([factories.event(key, model, request_id="kept")])
    good = factories.event(key, model, request_id="good")
    bad = factories.event(key, model, request_id="bad")
    bad.update(override)
    if override.get("latency_ms", 0) is None:
        del bad["latency_ms"]
    with pytest.raises(IngestValidationError) as caught:
        ingest_events([good, bad])
    assert [(e.index, e.field) for e in caught.value.errors] == [(1, field)]
    assert list(UsageEvent.objects.values_list("request_id", flat=True)) == ["kept"]


def test_an_event_before_any_price_is_rejected(setup):
    world, model, key, *_ = setup
    with pytest.raises(IngestValidationError) as caught:
        ingest_events([factories.event(key, model, timestamp="2019-01-01T00:00:00Z")])
    assert caught.value.errors[0].field == "model" and "no CNY price" in caught.value.errors[0].message


@pytest.mark.parametrize("events", [[], "nope", [{}] * 1001], ids=["empty", "not-a-list", "too-many"])
def test_the_batch_itself_must_be_1_to_1000_events(setup, events):
    with pytest.raises(IngestValidationError) as caught:
        ingest_events(events)
    assert caught.value.errors[0].field == "events"
