"""venice-py==2.9.0 (`venice_ai.VeniceClient`, async) against our Venice dialect (API.md §6).

`client.billing` is the only part of venice-py that reaches Venice's billing endpoints; every one
of its methods is called here with realistic arguments (probes/venice_py_billing.py), with the
base URL `<server>/api/v1` and the organization owner's management key as the API key:
`get_usage_history` (a first page and its cursors), `iter_usage_history`,
`iter_usage_history_csv` (GET /billing/usage-history), `get_balance` (GET /billing/balance) and
`get_usage_analytics` (GET /billing/usage-analytics, by lookback and by dates). Each answer must
parse into venice-py's own models (`BillingUsageHistoryResponse`, `BillingBalanceResponse`,
`UsageAnalyticsResponse`) and carry the numbers recomputed from the events the world sent.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from datetime import datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from tests.clients import clientenv
from tests.clients.ledger_expectations import assert_ledger, close
from tests.clients.world import LIVE_DATABASE, ClientWorld, Tenant

pytestmark = LIVE_DATABASE

PAGE_SIZE = 10  # venice-py's smallest: the walks below take several pages


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _analytics_dates(world: ClientWorld) -> tuple[str, str]:
    # A day either side of the events, so the answer holds whether endDate is read inclusive or not.
    zone = ZoneInfo(world.northwind.timezone)
    return ((world.start.astimezone(zone).date() - timedelta(days=1)).isoformat(),
            (world.now.astimezone(zone).date() + timedelta(days=1)).isoformat())


def _history_range(world: ClientWorld) -> dict:
    return {"startTimestamp": _iso(world.start), "endTimestamp": _iso(world.now + timedelta(hours=1))}


def collect_answers(world: ClientWorld) -> dict:
    northwind, shenzhou = world.northwind.management_key, world.shenzhou.management_key
    start_date, end_date = _analytics_dates(world)
    calls = [
        ("history_pages", northwind, "get_usage_history_pages", {**_history_range(world), "pageSize": PAGE_SIZE}),
        ("history_walk", northwind, "iter_usage_history", {**_history_range(world), "page_size": PAGE_SIZE}),
        ("history_csv_walk", northwind, "iter_usage_history_csv", {**_history_range(world), "page_size": PAGE_SIZE}),
        ("history_cny", shenzhou, "get_usage_history_pages", {**_history_range(world), "currency": "CNY"}),
        ("balance", northwind, "get_balance", {}),
        ("analytics_lookback", northwind, "get_usage_analytics", {"lookback": "7d"}),
        ("analytics_dates", northwind, "get_usage_analytics", {"startDate": start_date, "endDate": end_date}),
    ]
    return clientenv.run_probe(clientenv.VENICE_PY, "venice_py_billing", {
        "base_url": f"{world.base_url}/api/v1",
        "calls": [{"name": name, "api_key": key, "method": method, "kwargs": kwargs}
                  for name, key, method, kwargs in calls],
    })


def _value(answers: dict, name: str, method: str):
    outcome = answers[name]
    assert outcome["ok"], f"venice-py 2.9.0 client.billing.{method} failed: {outcome['error']}"
    return outcome["value"]


def _local_date(tenant: Tenant, event: dict) -> str:
    moment = datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00"))
    return moment.astimezone(ZoneInfo(tenant.timezone)).date().isoformat()


# --- GET /billing/usage-history ------------------------------------------------------------------


def test_get_usage_history_first_page_and_its_cursors(world, answers):
    """venice-py `billing.get_usage_history(startTimestamp, endTimestamp, pageSize=10)`, then
    `get_usage_history(cursor=page.nextCursor)` until no cursor: BillingUsageHistoryResponse pages."""
    pages = _value(answers, "history_pages", "get_usage_history")
    expected = len(world.northwind.events) + len(world.northwind.grants)
    sizes = [min(PAGE_SIZE, expected - first) for first in range(0, expected, PAGE_SIZE)]
    assert [len(page["data"]) for page in pages] == sizes
    assert pages[-1]["nextCursor"] is None and all(page["nextCursor"] for page in pages[:-1])
    assert_ledger(world, world.northwind, [entry for page in pages for entry in page["data"]])


def test_iter_usage_history_walks_every_entry_once(world, answers):
    """venice-py `billing.iter_usage_history(page_size=10, startTimestamp, endTimestamp)`."""
    entries = _value(answers, "history_walk", "iter_usage_history")
    assert len(entries) == len(world.northwind.events) + len(world.northwind.grants)
    assert_ledger(world, world.northwind, entries)


def test_iter_usage_history_csv_pages(world, answers):
    """venice-py `billing.iter_usage_history_csv(page_size=10, ...)`: one CSV document per page
    (header row included), the cursor in `x-next-cursor`, together every entry once."""
    pages = _value(answers, "history_csv_walk", "iter_usage_history_csv")
    rows = []
    for page in pages:
        table = list(csv.DictReader(io.StringIO(page["text"])))
        assert 0 < len(table) <= PAGE_SIZE, page["text"][:500]
        rows.extend(table)
    assert len(rows) == len(world.northwind.events) + len(world.northwind.grants)
    for event in world.northwind.events:
        assert sum(event["request_id"] in row.values() for row in rows) == 1, event["request_id"]


def test_get_usage_history_of_a_cny_account_with_its_currency(world, answers):
    """venice-py `billing.get_usage_history(currency="CNY", ...)` for a CNY organization: its own
    currency in `currency`, amounts in yuan, every field still parses (venice-py's currency is a str)."""
    pages = _value(answers, "history_cny", "get_usage_history")
    entries = [entry for page in pages for entry in page["data"]]
    assert len(entries) == len(world.shenzhou.events) + len(world.shenzhou.grants)
    assert_ledger(world, world.shenzhou, entries)


# --- GET /billing/balance ------------------------------------------------------------------------


def test_get_balance(world, answers):
    """venice-py `billing.get_balance()` → BillingBalanceResponse: the USD balance is the grants
    less the usage; nothing staked, so no DIEM."""
    balance = _value(answers, "balance", "get_balance")
    used = sum(world.cost(world.northwind, event) for event in world.northwind.events)
    assert balance["canConsume"] is True
    assert balance["consumptionCurrency"] == "USD"
    assert balance["balances"] is not None and close(balance["balances"]["usd"], sum(world.northwind.grants) - used)
    assert balance["balances"]["diem"] in (None, 0)
    assert balance["diemEpochAllocation"] in (None, 0)


# --- GET /billing/usage-analytics ----------------------------------------------------------------


def _model_label(world: ClientWorld, name: str) -> str:
    """venice-py calls it the model's display name; our code or our display name both name it."""
    for model in world.models.values():
        if name in (model.code, model.name):
            return model.code
    raise AssertionError(f"modelName {name!r} names no model of the catalog")


def assert_analytics(world: ClientWorld, analytics: dict) -> None:
    tenant = world.northwind
    costs = {event["request_id"]: world.cost(tenant, event) for event in tenant.events}
    assert close(sum(day["USD"] for day in analytics["byDate"]), sum(costs.values()))
    per_day: dict[str, Decimal] = defaultdict(Decimal)
    for event in tenant.events:
        per_day[_local_date(tenant, event)] += costs[event["request_id"]]
    for day in analytics["byDate"]:
        assert close(day["USD"], per_day.get(day["date"], Decimal(0))), day
        assert day["DIEM"] == 0

    by_model: dict[str, list[dict]] = defaultdict(list)
    for event in tenant.events:
        by_model[event["model"]].append(event)
    assert sorted(_model_label(world, row["modelName"]) for row in analytics["byModel"]) == sorted(by_model)
    for row in analytics["byModel"]:
        code = _model_label(world, row["modelName"])
        events = by_model[code]
        assert close(row["totalUsd"], sum(costs[e["request_id"]] for e in events)), row
        assert row["totalDiem"] == 0
        if world.models[code].modality == "llm":
            assert row["unitType"] == "tokens"
            assert row["totalUnits"] == sum(e["prompt_tokens"] + e["completion_tokens"] for e in events)
            parts = {part["type"]: part for part in row["breakdown"]}
            assert close(sum(part["usd"] for part in parts.values()), sum(costs[e["request_id"]] for e in events))
            assert parts["Output"]["units"] == sum(e["completion_tokens"] for e in events)
            assert parts["Cache Read"]["units"] == sum(e["cached_tokens"] for e in events)
            written = parts.get("Cache Write", {"units": 0})["units"]
            assert parts["Input"]["units"] + written == sum(e["prompt_tokens"] - e["cached_tokens"] for e in events)
        else:
            assert row["unitType"] == "images"
            assert row["totalUnits"] == sum(e["image_count"] for e in events)
    assert sorted(analytics["topModels"]) == sorted(row["modelName"] for row in analytics["byModel"])

    by_key: dict[str, list[dict]] = defaultdict(list)
    for event in tenant.events:
        by_key[event["key_id"]].append(event)
    assert sorted(row["apiKeyId"] for row in analytics["byKey"]) == sorted(by_key)
    for row in analytics["byKey"]:
        events = by_key[row["apiKeyId"]]
        assert row["description"] == tenant.keys[row["apiKeyId"]]["name"]
        assert close(row["totalUsd"], sum(costs[e["request_id"]] for e in events)), row
        assert row["totalDiem"] == 0
        assert row["totalUnits"] == sum(e["prompt_tokens"] + e["completion_tokens"] + e["image_count"] for e in events)
    assert sorted(analytics["topKeyNames"]) == sorted(row["description"] for row in analytics["byKey"])
    for series in (analytics["byModelDaily"], analytics["byKeyDaily"]):
        assert len(series) == len(analytics["byDate"])
        assert all(isinstance(point["date"], int) for point in series), "daily series are keyed by epoch milliseconds"


def test_get_usage_analytics_by_lookback(world, answers):
    """venice-py `billing.get_usage_analytics(lookback="7d")` → UsageAnalyticsResponse: seven local
    days ending today, by day, model (with its Input/Output/Cache Read breakdown) and key."""
    analytics = _value(answers, "analytics_lookback", "get_usage_analytics")
    assert analytics["lookback"] == "7d"
    today = world.now.astimezone(ZoneInfo(world.northwind.timezone)).date()
    assert [day["date"] for day in analytics["byDate"]] == [(today - timedelta(days=n)).isoformat()
                                                            for n in range(6, -1, -1)]
    assert_analytics(world, analytics)


def test_get_usage_analytics_by_dates(world, answers):
    """venice-py `billing.get_usage_analytics(startDate="YYYY-MM-DD", endDate="YYYY-MM-DD")`:
    `lookback` echoes "startDate:endDate"."""
    analytics = _value(answers, "analytics_dates", "get_usage_analytics")
    start_date, end_date = _analytics_dates(world)
    assert analytics["lookback"] == f"{start_date}:{end_date}"
    assert_analytics(world, analytics)
