"""r9s's account client against our r9s Manager dialect (API.md §7), by its field lists.

The released r9s package (0.9.0 on PyPI) has no account client; it lives on r9s-ai/r9s-python's
upstream branches (`r9s.account.Account.usage` / `.balance`, models in
`r9s/models/account_models.py`). It sends `GET <base>/portal/management/usage?start_time=&end_time=`
(Unix seconds) and `GET <base>/portal/management/balance` with `Authorization: Bearer <manage key>`
and `Accept: application/json`, base `https://.../api/v1`, and reads these fields (all optional in
its models, so a missing one parses as None and is simply lost to the user):
- usage: data.records[] {timestamp: int, tokens: int, model: str}, data.total_tokens: int;
- balance: data {balance: float, balance_str: str, coupon_balance: float, currency_code: str,
  credit_limit: float, total_coupon_amount: float}.
So the test asks the live server exactly as that client does (httpx, over the wire) and checks
each field it reads: present, of the type its model declares, and with the value recomputed from
the grants and events the world sent.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, time, timedelta
from decimal import ROUND_HALF_UP, Decimal
from zoneinfo import ZoneInfo

import httpx

from tests.clients.world import LIVE_DATABASE, ClientWorld, Tenant

pytestmark = LIVE_DATABASE

NUMBER = (int, float)


def _get(world: ClientWorld, tenant: Tenant, path: str, params: dict | None = None) -> dict:
    with httpx.Client(base_url=f"{world.base_url}/api/v1", timeout=30) as http:
        answer = http.get(f"/portal/management/{path}", params=params, headers={
            "Authorization": f"Bearer {tenant.management_key}", "Accept": "application/json"})
    return {"status": answer.status_code, "content_type": answer.headers.get("content-type"), "body": answer.json()}


def _usage_range(world: ClientWorld) -> dict:
    return {"start_time": int((world.start - timedelta(days=1)).timestamp()),
            "end_time": int((world.now + timedelta(days=1)).timestamp())}


def collect_answers(world: ClientWorld) -> dict:
    return {"usage": _get(world, world.northwind, "usage", _usage_range(world)),
            "balance": _get(world, world.northwind, "balance"),
            "balance_cny": _get(world, world.shenzhou, "balance")}


def _data(answer: dict) -> dict:
    assert answer["status"] == 200 and answer["content_type"].startswith("application/json"), answer
    assert answer["body"]["meta"]["code"] == 200
    return answer["body"]["data"]


def _is(value, kind) -> bool:
    return isinstance(value, kind) and not isinstance(value, bool)


def _assert_balance_fields(world: ClientWorld, tenant: Tenant, data: dict) -> None:
    used = sum(world.cost(tenant, event) for event in tenant.events)
    granted = sum(tenant.grants)
    balance = granted - used
    expected = {
        "balance": balance,
        # Usage stays below the grants and draws on them first (API.md §10): all of it came off them.
        "coupon_balance": granted - used,
        "credit_limit": tenant.credit_limit,
        "total_coupon_amount": granted,
    }
    wrong = {}
    for name, value in expected.items():
        got = data.get(name)
        if not _is(got, NUMBER) or abs(Decimal(str(got)) - value) > Decimal("0.000000005"):
            wrong[name] = f"{got!r} (expected the number {value})"
    if data.get("currency_code") != tenant.currency:
        wrong["currency_code"] = f"{data.get('currency_code')!r} (expected {tenant.currency!r})"
    text = data.get("balance_str")
    # A decimal string of the balance: all its places, or rounded half-up to 2 as a display field.
    if not _is(text, str) or Decimal(text) not in (balance, balance.quantize(Decimal("0.01"), ROUND_HALF_UP)):
        wrong["balance_str"] = f"{text!r} (expected the decimal string of {balance})"
    assert not wrong, f"fields r9s's AccountBalanceData reads, wrong or missing: {wrong}"


def test_balance_carries_every_field_r9s_reads(world, answers):
    """r9s `Account.balance()` (GET /portal/management/balance) for a USD organization: balance,
    balance_str, coupon_balance, currency_code, credit_limit, total_coupon_amount."""
    _assert_balance_fields(world, world.northwind, _data(answers["balance"]))


def test_balance_of_a_cny_organization(world, answers):
    """The same for a CNY organization: r9s reads currency_code as a plain string."""
    _assert_balance_fields(world, world.shenzhou, _data(answers["balance_cny"]))


def test_usage_carries_every_field_r9s_reads(world, answers):
    """r9s `Account.usage(start_time, end_time)` (GET /portal/management/usage): one record per
    (local day, model), `timestamp` the Unix time the day starts in the organization's zone,
    ascending, `tokens` = prompt + completion, and `total_tokens` their sum."""
    data = _data(answers["usage"])
    tenant = world.northwind
    zone = ZoneInfo(tenant.timezone)
    tokens: dict[tuple[int, str], int] = defaultdict(int)
    for event in tenant.events:
        day = datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")).astimezone(zone).date()
        day_starts = int(datetime.combine(day, time.min, tzinfo=zone).timestamp())
        tokens[(day_starts, event["model"])] += event["prompt_tokens"] + event["completion_tokens"]
    records = data["records"]
    assert all(_is(r["timestamp"], int) and _is(r["tokens"], int) and _is(r["model"], str) for r in records)
    assert sorted((r["timestamp"], r["model"], r["tokens"]) for r in records) == sorted(
        (day, model, count) for (day, model), count in tokens.items())
    assert [r["timestamp"] for r in records] == sorted(r["timestamp"] for r in records), "ascending"
    assert _is(data["total_tokens"], int) and data["total_tokens"] == sum(tokens.values())
