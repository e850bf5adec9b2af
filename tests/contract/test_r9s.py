"""r9s Manager dialect: usage per (local day, model) and the balance, in the meta envelope."""

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import time_machine
from rest_framework.test import APIClient

from billing.ledger import expire_grants
from billing.services import grant_credit, record_usage
from keys import services as key_services
from portal.services import SYSTEM
from tests import factories
from tests.api_helpers import client_for

USAGE, BALANCE = "/api/v1/portal/management/usage", "/api/v1/portal/management/balance"


@pytest.fixture
def alice(history):
    return client_for(history.world.alice)


def test_usage_records_per_local_day_and_model(history, alice, schema_validator):
    zone = history.world.acme.zone
    start = int((history.now - timedelta(days=8, hours=5)).timestamp())
    end = int((history.now - timedelta(hours=3)).timestamp())
    response = alice.get(USAGE, {"start_time": start, "end_time": end})
    assert response.status_code == 200, response.content
    body = response.json()
    schema_validator(USAGE, "get", body)
    assert body["meta"]["code"] == 200 and body["meta"]["message"] == "success" and body["meta"]["request_id"]
    expected = defaultdict(int)
    for e in history.events:
        if e.organization_id == history.world.acme.pk and start <= e.timestamp.timestamp() < end:
            day = e.timestamp.astimezone(zone).date()
            day_start = int(datetime(day.year, day.month, day.day, tzinfo=zone).timestamp())
            expected[(day_start, e.model.code)] += e.prompt_tokens + e.completion_tokens
    expected = {key: tokens for key, tokens in expected.items()}
    got = {(r["timestamp"], r["model"]): r["tokens"] for r in body["data"]["records"]}
    assert {k: v for k, v in got.items()} == {k: v for k, v in expected.items() if k in got}
    assert set(expected) == set(got)
    assert [r["timestamp"] for r in body["data"]["records"]] == sorted(r["timestamp"] for r in body["data"]["records"])
    assert body["data"]["total_tokens"] == sum(expected.values())


@pytest.mark.parametrize("params, field", [
    ({}, "start_time"), ({"start_time": 10}, "end_time"), ({"start_time": 100, "end_time": 100}, "end_time"),
    ({"start_time": 0, "end_time": 367 * 86400}, "end_time"), ({"start_time": "yesterday", "end_time": 5},
                                                              "start_time")],
    ids=["nothing", "no-end", "empty-range", "over-366-days", "not-a-number"])
def test_bad_ranges_are_400_in_the_envelope(history, alice, params, field):
    response = alice.get(USAGE, params)
    assert response.status_code == 400
    body = response.json()
    assert body["data"] is None and body["meta"]["code"] == 400 and field in body["meta"]["message"]


def test_balance_is_credits_minus_usage(history, alice, schema_validator):
    acme = history.world.acme
    grant_credit(actor=SYSTEM, organization=acme, amount=Decimal("100"), kind="top_up")
    grant_credit(actor=SYSTEM, organization=acme, amount=Decimal("25.5"))
    body = alice.get(BALANCE).json()
    schema_validator(BALANCE, "get", body)
    used = sum(e.cost for e in history.events if e.organization_id == acme.pk)
    data = body["data"]
    assert data["org_id"] == str(acme.uuid) and data["currency"] == data["currency_code"] == "CNY"
    assert Decimal(str(data["total_recharge"])) == Decimal("100")  # top-ups only
    assert Decimal(str(data["total_coupon_amount"])) == Decimal("25.5")
    # The history was ingested without charging the ledger, so no grant was drawn.
    assert Decimal(str(data["coupon_balance"])) == Decimal("25.5")
    assert Decimal(str(data["total_used"])) == used
    assert Decimal(str(data["balance"])) == Decimal("125.5") - used
    assert Decimal(data["balance_str"]) == Decimal("125.5") - used  # exact, as a decimal string
    assert data["credit_limit"] == 0


# The balance a USD organization's ledger was built to: top-ups 50, grants 10 (drawn by a 3.00 USD
# charge) and 5 (expired unused), credit limit 100.
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


@pytest.fixture
def globex_ledger(ram_world):
    globex = ram_world.globex
    account = globex.billing_account
    account.credit_limit = Decimal("100")
    account.save()
    model = factories.make_model("gpt-test", usd=("2", "1", "4", "0", "0"))
    key = factories.make_inference_key(ram_world.sales, owner=ram_world.charlie)[0]
    with time_machine.travel(T0, tick=False):
        grant_credit(actor=SYSTEM, organization=globex, amount=Decimal("50"), kind="top_up")
        grant_credit(actor=SYSTEM, organization=globex, amount=Decimal("10"), priority=1)
        grant_credit(actor=SYSTEM, organization=globex, amount=Decimal("5"), expires_at=T0 + timedelta(days=1))
    with time_machine.travel(T0 + timedelta(hours=1), tick=False):
        # 1,000,000 prompt tokens at 2 and 250,000 completion tokens at 4 per million: 3.00 USD,
        # drawn from the priority-1 grant.
        record_usage([factories.event(key, model, timestamp=(T0 + timedelta(hours=1)).isoformat(),
                                      prompt_tokens=1_000_000, completion_tokens=250_000)])
    # Acme's credit must never show in Globex's balance.
    grant_credit(actor=SYSTEM, organization=ram_world.acme, amount=Decimal("999"))
    return ram_world


@pytest.mark.parametrize("expiry_job_ran", [False, True], ids=["before-expiry-job", "after-expiry-job"])
def test_every_balance_field_of_a_usd_account(globex_ledger, expiry_job_ran):
    charlie = client_for(globex_ledger.charlie)
    with time_machine.travel(T0 + timedelta(days=2), tick=False):
        if expiry_job_ran:
            expire_grants()
        data = charlie.get(BALANCE).json()["data"]
    assert data["currency_code"] == data["currency"] == "USD" and data["org_id"] == str(globex_ledger.globex.uuid)
    assert Decimal(str(data["total_recharge"])) == Decimal("50")
    assert Decimal(str(data["total_coupon_amount"])) == Decimal("15")  # every grant, the expired one too
    assert Decimal(str(data["coupon_balance"])) == Decimal("7")  # 10 - 3; the expired 5 no longer counts
    assert Decimal(str(data["total_used"])) == Decimal("3")
    assert Decimal(str(data["credit_limit"])) == Decimal("100")
    # Before the expiry job runs, the expired remainder is still on the ledger's balance.
    expected = Decimal("57") if expiry_job_ran else Decimal("62")
    assert Decimal(str(data["balance"])) == expected and Decimal(data["balance_str"]) == expected


# The fields r9s's own account client reads and their types (r9s-python, models/account_models.py:
# AccountBalanceData and AccountUsageData / AccountUsageRecord).
R9S_BALANCE_FIELDS = {"balance": float, "balance_str": str, "coupon_balance": float, "currency_code": str,
                      "credit_limit": float, "total_coupon_amount": float}
R9S_USAGE_FIELDS = {"records": list, "total_tokens": int}
R9S_USAGE_RECORD_FIELDS = {"timestamp": int, "tokens": int, "model": str}


def _parses_as(value, wanted: type) -> bool:
    # A JSON number parses into the client's float, an integer too (pydantic's lax mode).
    if wanted is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    return isinstance(value, wanted) and not isinstance(value, bool)


def test_balance_and_usage_carry_every_field_the_r9s_client_reads(globex_ledger):
    charlie = client_for(globex_ledger.charlie)
    balance = charlie.get(BALANCE).json()
    assert set(R9S_BALANCE_FIELDS) <= set(balance["data"])
    for name, wanted in R9S_BALANCE_FIELDS.items():
        assert _parses_as(balance["data"][name], wanted), name
    start = int(T0.timestamp())
    usage = charlie.get(USAGE, {"start_time": start, "end_time": start + 86400}).json()
    for name, wanted in R9S_USAGE_FIELDS.items():
        assert _parses_as(usage["data"][name], wanted), name
    assert usage["data"]["records"] and usage["data"]["total_tokens"] == 1_250_000
    for record in usage["data"]["records"]:
        for name, wanted in R9S_USAGE_RECORD_FIELDS.items():
            assert _parses_as(record[name], wanted), name


def test_scopes_are_enforced(history):
    member = history.world.alice
    usage_only = APIClient()
    usage_only.credentials(HTTP_AUTHORIZATION="Bearer " + key_services.create_management_key(
        actor=SYSTEM, member=member, name="u", scopes=["usage:read"]).secret)
    now = int(datetime.now(UTC).timestamp())
    assert usage_only.get(USAGE, {"start_time": now - 3600, "end_time": now}).status_code == 200
    denied = usage_only.get(BALANCE)
    assert denied.status_code == 403 and denied.json()["meta"]["code"] == 403 and denied.json()["data"] is None
    assert "management:GetBalance" in denied.json()["meta"]["message"]


def test_missing_credentials_are_401_in_the_envelope(history):
    response = APIClient().get(BALANCE)
    assert response.status_code == 401 and response.json()["meta"]["code"] == 401
