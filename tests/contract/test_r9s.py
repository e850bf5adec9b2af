"""r9s Manager dialect: usage per (local day, model) and the balance, in the meta envelope."""

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from rest_framework.test import APIClient

from billing.services import grant_credit
from keys import services as key_services
from portal.services import SYSTEM
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
    assert data["org_id"] == str(acme.uuid) and data["currency"] == "CNY"
    assert Decimal(str(data["total_recharge"])) == Decimal("125.5")
    assert Decimal(str(data["total_used"])) == used
    assert Decimal(str(data["balance"])) == Decimal("125.5") - used


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
