"""Budgets, credit grants and the running balance (API.md §10), told as Acme's month: alerts
come once per threshold and period, a hard limit stops the keys under it as soon as the batch
that reached it commits and lets them go on the 1st, grants drain in order and expire with an
entry, and the balance is always the sum of the ledger."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import time_machine
from rest_framework.test import APIClient

from billing.budgets import run_budget_job
from billing.models import BillingAccount, Budget, BudgetAlert, CreditGrant, LedgerEntry, WebhookEvent
from billing.services import grant_credit, record_usage
from keys import services as key_services
from portal.services import SYSTEM
from tests import factories
from tests.api_helpers import client_for
from usage.models import UsageEvent

# Each factory event costs 1000 × 1 + 500 × 2 per million = 0.002 CNY.
EVENT_COST = Decimal("0.002")
MARCH_10 = datetime(2026, 3, 10, 4, 0, tzinfo=UTC)  # noon in Shanghai


@pytest.fixture
def gateway(db):
    client = APIClient()
    token = key_services.create_service_token(actor=SYSTEM, name="gateway").secret
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


@pytest.fixture
def model(db):
    return factories.make_model("qwen-plus")


def _spend(key, model, count: int, at: datetime) -> None:
    record_usage([factories.event(key, model, timestamp=(at + timedelta(seconds=i)).isoformat())
                  for i in range(count)])


def _budget(world, amount: str, **fields) -> Budget:
    from billing.budgets import create_budget

    fields.setdefault("scope", Budget.Scope.ORGANIZATION)
    return create_budget(actor=SYSTEM, organization=world.acme, amount=Decimal(amount), **fields)


def _verify(gateway, secret: str) -> dict:
    response = gateway.post("/api/v1/gateway/keys/verify", {"key": secret}, format="json")
    assert response.status_code == 200
    return response.json()


def test_each_threshold_alerts_once_per_period_and_again_the_next(world, model, mailoutbox):
    world.acme.billing_account.billing_email = "finance@acme.test"
    world.acme.billing_account.save()
    key, _ = factories.make_inference_key(world.research)
    with time_machine.travel(MARCH_10, tick=False):
        budget = _budget(world, "0.01", thresholds=[50, 100])
        _spend(key, model, 3, MARCH_10 - timedelta(hours=1))  # 0.006: 60 %
        assert run_budget_job().alerts == 1
        assert run_budget_job().alerts == 0  # a rerun sends nothing twice
        _spend(key, model, 2, MARCH_10 - timedelta(minutes=30))  # 0.010: 100 %
        assert run_budget_job().alerts == 1
    assert [(a.threshold, a.period_start.isoformat()) for a in BudgetAlert.objects.order_by("id")] == [
        (50, "2026-03-01"), (100, "2026-03-01")]
    april = datetime(2026, 4, 2, 4, 0, tzinfo=UTC)
    with time_machine.travel(april, tick=False):
        assert run_budget_job().alerts == 0  # nothing spent in April yet
        _spend(key, model, 3, april - timedelta(hours=1))
        assert run_budget_job().alerts == 1
    assert BudgetAlert.objects.filter(budget=budget, period_start="2026-04-01", threshold=50).exists()
    events = WebhookEvent.objects.filter(organization=world.acme, type="budget.threshold").order_by("id")
    assert [e.data["threshold"] for e in events] == [50, 100, 50]
    assert events[0].data["spent"] == "0.01" and events[0].data["period_start"] == "2026-03-01"
    assert len(mailoutbox) == 3 and mailoutbox[0].to == ["finance@acme.test"]


def test_a_month_starts_on_the_organizations_own_clock(world, model):
    # 2026-03-31 17:00 UTC is already 1 April in Shanghai: that spending is April's.
    key, _ = factories.make_inference_key(world.research)
    with time_machine.travel(datetime(2026, 3, 31, 17, 0, tzinfo=UTC), tick=False):
        budget = _budget(world, "0.004", thresholds=[100])
        _spend(key, model, 2, datetime(2026, 3, 31, 15, 59, 58, tzinfo=UTC))  # 23:59:58 on 31 March, local
        assert run_budget_job().alerts == 0
        _spend(key, model, 2, datetime(2026, 3, 31, 16, 0, 0, tzinfo=UTC))  # 00:00:00 on 1 April, local
        assert run_budget_job().alerts == 1
    assert budget.alerts.get().period_start.isoformat() == "2026-04-01"


def test_a_hard_limit_stops_the_keys_under_it_when_the_crossing_batch_commits(world, model, gateway):
    research_key, research_secret = factories.make_inference_key(world.research)
    _, support_secret = factories.make_inference_key(world.support)
    with time_machine.travel(MARCH_10, tick=False):
        _budget(world, "0.004", scope=Budget.Scope.DEPARTMENT, department=world.research, hard_limit=True)
        _spend(research_key, model, 1, MARCH_10 - timedelta(hours=1))
        assert _verify(gateway, research_secret)["budget_exhausted"] is False  # cached from here on
        _spend(research_key, model, 1, MARCH_10 - timedelta(minutes=50))  # reaches 0.004; no job runs
        assert _verify(gateway, research_secret)["budget_exhausted"] is True
        assert _verify(gateway, support_secret)["budget_exhausted"] is False
    with time_machine.travel(datetime(2026, 3, 31, 16, 0, 1, tzinfo=UTC), tick=False):  # 1 April in Shanghai
        run_budget_job()
        assert _verify(gateway, research_secret)["budget_exhausted"] is False


def test_raising_a_hard_budget_lets_its_keys_go_at_once(world, model, gateway):
    key, secret = factories.make_inference_key(world.research)
    with time_machine.travel(MARCH_10, tick=False):
        budget = _budget(world, "0.002", scope=Budget.Scope.KEY, key=key, hard_limit=True)
        _spend(key, model, 1, MARCH_10 - timedelta(hours=1))
        assert _verify(gateway, secret)["budget_exhausted"] is True
        response = client_for(world.alice).put(f"/api/v1/billing/budgets/{budget.uuid}", {"amount": "1"},
                                               format="json")
        assert response.status_code == 200 and response.json()["status"] == "ok"
        assert _verify(gateway, secret)["budget_exhausted"] is False


def test_grants_drain_by_priority_then_expiry_and_expire_with_an_entry(world, model):
    key, _ = factories.make_inference_key(world.research)
    with time_machine.travel(MARCH_10, tick=False):
        late = grant_credit(actor=SYSTEM, organization=world.acme, amount=Decimal("0.003"), priority=5,
                            expires_at=MARCH_10 + timedelta(days=10))
        soon = grant_credit(actor=SYSTEM, organization=world.acme, amount=Decimal("0.003"), priority=5,
                            expires_at=MARCH_10 + timedelta(days=5))
        cash = grant_credit(actor=SYSTEM, organization=world.acme, amount=Decimal("1"), kind="top_up")
        _spend(key, model, 2, MARCH_10 - timedelta(hours=1))  # 0.004
    for grant in (late, soon, cash):
        grant.refresh_from_db()
    assert (soon.remaining, soon.status) == (Decimal(0), "used")  # earliest expiry first
    assert (late.remaining, late.status) == (Decimal("0.002"), "active")
    assert cash.remaining == Decimal(1)  # priority 10 comes after 5
    with time_machine.travel(MARCH_10 + timedelta(days=11), tick=False):
        assert run_budget_job().grants_expired == 1
        assert run_budget_job().grants_expired == 0
    late.refresh_from_db()
    assert (late.remaining, late.status) == (Decimal(0), "expired")
    expiry = LedgerEntry.objects.get(kind="grant_expiry")
    assert expiry.amount == Decimal("-0.002") and expiry.grant == late
    _assert_balance_is_the_ledger(world.acme)


def _assert_balance_is_the_ledger(organization) -> None:
    # Summed in Python: SQLite would sum decimals as floats.
    entries = sum(LedgerEntry.objects.filter(organization=organization).values_list("amount", flat=True))
    used = sum(UsageEvent.objects.filter(organization=organization).values_list("cost", flat=True))
    assert BillingAccount.objects.get(organization=organization).balance == entries - used


def test_the_running_balance_is_the_sum_of_entries_and_charges(world, model):
    key, _ = factories.make_inference_key(world.research)
    grant_credit(actor=SYSTEM, organization=world.acme, amount=Decimal("5"), kind="top_up")
    batch = [factories.event(key, model, timestamp=(MARCH_10 + timedelta(seconds=i)).isoformat()) for i in range(7)]
    assert record_usage(batch).accepted == 7
    assert record_usage(batch).duplicates == 7  # a replay charges nothing
    assert BillingAccount.objects.get(organization=world.acme).balance == Decimal(5) - 7 * EVENT_COST
    _assert_balance_is_the_ledger(world.acme)


def test_the_ingestion_api_charges_the_ledger(world, model, gateway):
    key, _ = factories.make_inference_key(world.research)
    response = gateway.post("/api/v1/usage/events", {"events": [factories.event(key, model)]}, format="json")
    assert response.status_code == 200
    assert BillingAccount.objects.get(organization=world.acme).balance == -EVENT_COST


def test_budgets_through_the_api(world):
    alice = client_for(world.alice)
    created = alice.post("/api/v1/billing/budgets", {"scope": "department", "target_id": str(world.research.uuid),
                                                     "amount": "100.5", "hard_limit": True}, format="json")
    assert created.status_code == 201, created.content
    body = created.json()
    assert body["amount"] == "100.50" and body["currency"] == "CNY" and body["thresholds"] == [50, 80, 100]
    assert body["spent"] == "0.00" and body["status"] == "ok" and body["target_id"] == str(world.research.uuid)
    listed = alice.get("/api/v1/billing/budgets").json()
    assert listed["total"] == 1 and listed["items"][0]["id"] == body["id"]
    assert alice.delete(f"/api/v1/billing/budgets/{body['id']}").status_code == 204
    assert not Budget.objects.exists()


@pytest.mark.parametrize("body, field", [
    ({"scope": "organization", "amount": "0"}, "amount"),
    ({"scope": "organization", "amount": "-1"}, "amount"),
    ({"scope": "organization", "amount": "abc"}, "amount"),
    ({"scope": "organization", "amount": "10", "thresholds": [80, 50]}, "thresholds"),
    ({"scope": "organization", "amount": "10", "thresholds": [0]}, "thresholds"),
    ({"scope": "organization", "amount": "10", "thresholds": [101]}, "thresholds"),
    ({"scope": "department", "amount": "10"}, "target_id"),
    ({"scope": "department", "amount": "10", "target_id": "00000000-0000-0000-0000-000000000000"}, "target_id"),
    ({"scope": "planet", "amount": "10"}, "scope"),
], ids=["zero", "negative", "text", "descending", "zero-percent", "over-100", "no-target", "unknown-target",
        "scope"])
def test_a_bad_budget_is_refused_by_field_and_nothing_is_stored(world, body, field):
    response = client_for(world.alice).post("/api/v1/billing/budgets", body, format="json")
    assert response.status_code == 422, response.content
    assert any(field in problem["loc"] for problem in response.json()["detail"]), response.json()
    assert not Budget.objects.exists()


def test_another_organizations_department_is_no_target(world):
    response = client_for(world.charlie).post(
        "/api/v1/billing/budgets", {"scope": "department", "target_id": str(world.research.uuid), "amount": "1"},
        format="json")
    assert response.status_code == 422 and not Budget.objects.exists()


def test_operators_grant_credit_with_the_service_token_only(world, gateway):
    body = {"org_id": str(world.acme.uuid), "kind": "grant", "amount": "50", "priority": 3,
            "expires_at": "2099-01-01T00:00:00Z", "note": "Welcome"}
    assert client_for(world.alice).post("/api/v1/billing/credit-grants", body, format="json").status_code == 403
    created = gateway.post("/api/v1/billing/credit-grants", body, format="json")
    assert created.status_code == 201, created.content
    grant = created.json()
    assert (grant["amount"], grant["remaining"], grant["status"], grant["priority"]) == ("50.00", "50.00", "active", 3)
    assert LedgerEntry.objects.get(grant__uuid=grant["id"]).amount == Decimal(50)
    assert BillingAccount.objects.get(organization=world.acme).balance == Decimal(50)
    listed = client_for(world.alice).get("/api/v1/billing/credit-grants").json()
    assert [g["id"] for g in listed["items"]] == [grant["id"]]
    bad = gateway.post("/api/v1/billing/credit-grants", {**body, "amount": "0"}, format="json")
    assert bad.status_code == 422 and CreditGrant.objects.count() == 1


def test_charlie_never_sees_acmes_budgets_or_grants(world):
    budget = _budget(world, "10")
    grant_credit(actor=SYSTEM, organization=world.acme, amount=Decimal("5"))
    charlie = client_for(world.charlie)
    assert charlie.get("/api/v1/billing/budgets").json() == {"items": [], "total": 0}
    assert charlie.get("/api/v1/billing/credit-grants").json() == {"items": [], "total": 0}
    for method in ("get", "put", "delete"):
        response = getattr(charlie, method)(f"/api/v1/billing/budgets/{budget.uuid}", {"amount": "1"}, format="json")
        assert response.status_code == 404
    budget.refresh_from_db()
    assert budget.amount == Decimal(10)


def test_a_threshold_is_reached_by_the_exact_spending_not_the_rounded_percent(world, model):
    key, _ = factories.make_inference_key(world.research)
    with time_machine.travel(MARCH_10, tick=False):
        # 0.004 of 0.00500031 is 79.9950 %: shown as 80.00 %, but the 80 % threshold is not reached.
        budget = _budget(world, "0.00500031", thresholds=[80])
        _spend(key, model, 2, MARCH_10 - timedelta(hours=1))
        assert run_budget_job().alerts == 0
        assert budget_body_progress(budget) == "80.00"
        budget.amount = Decimal("0.005")
        budget.save()
        assert run_budget_job().alerts == 1  # exactly 80 %


def budget_body_progress(budget) -> str:
    from billing.budgets import budget_state

    return str(budget_state(budget).progress_pct)


def test_a_stale_copy_of_a_hard_budget_never_announces_it_twice(world, model):
    from billing.budgets import _enforce

    key, _ = factories.make_inference_key(world.research)
    with time_machine.travel(MARCH_10, tick=False):
        budget = _budget(world, "0.002", hard_limit=True)
        stale = Budget.objects.get(pk=budget.pk)  # read before the crossing, as a running job would have
        _spend(key, model, 1, MARCH_10 - timedelta(hours=1))  # the batch marks it
        assert _enforce(stale, MARCH_10) is False
        assert run_budget_job().exhausted == 0
    assert WebhookEvent.objects.filter(type="budget.exhausted").count() == 1


def test_one_batch_of_two_organizations_charges_each_and_draws_only_its_own_grants(world, model):
    # charge_usage is set-based (one statement for every account, one read of every grant): each
    # organization's grants still drain in their own order, and no charge leaks to the other.
    acme_key, _ = factories.make_inference_key(world.research)
    globex_key, _ = factories.make_inference_key(world.sales)
    with time_machine.travel(MARCH_10, tick=False):
        first = grant_credit(actor=SYSTEM, organization=world.acme, amount=Decimal("0.003"), priority=1)
        second = grant_credit(actor=SYSTEM, organization=world.acme, amount=Decimal("1"), priority=2)
        globex_grant = grant_credit(actor=SYSTEM, organization=world.globex, amount=Decimal("0.001"))
        batch = [factories.event(acme_key, model, timestamp=(MARCH_10 - timedelta(minutes=i)).isoformat())
                 for i in range(2)]
        batch += [factories.event(globex_key, model, timestamp=(MARCH_10 - timedelta(minutes=i)).isoformat())
                  for i in range(3)]
        result = record_usage(batch)
    assert result.charges == {world.acme.pk: 2 * EVENT_COST, world.globex.pk: 3 * EVENT_COST}
    for grant in (first, second, globex_grant):
        grant.refresh_from_db()
    assert (first.remaining, first.status) == (Decimal(0), "used")
    assert second.remaining == Decimal("1") - (2 * EVENT_COST - Decimal("0.003"))
    assert (globex_grant.remaining, globex_grant.status) == (Decimal(0), "used")
    _assert_balance_is_the_ledger(world.acme)
    _assert_balance_is_the_ledger(world.globex)
