"""pyvenice==0.3.1 (`pyvenice.VeniceClient` + `pyvenice.Billing`, httpx) against our Venice
dialect's `GET /api/v1/billing/usage` (API.md §6).

`Billing` is the only part of pyvenice that reaches a Venice billing endpoint; each of its
methods is called here (probes/pyvenice_billing.py) with the base URL `<server>/api/v1` and the
USD organization owner's management key: `get_usage` (JSON, every page, pagination read from the
`x-pagination-*` headers), `get_usage(format="csv")`, `get_usage_async`, `get_all_usage` and
`get_usage_summary`. Answers must parse into pyvenice's `UsageResponse`/`UsageEntry` (whose
`pricePerUnitUsd` is a required float and whose currency is one of USD, VCU, DIEM: pyvenice allows
no other currency, so only the USD organization is asked) and carry the recomputed numbers.
"""

from __future__ import annotations

import csv
import io
import math
from datetime import datetime, timedelta

from tests.clients import clientenv
from tests.clients.ledger_expectations import assert_ledger, close
from tests.clients.world import LIVE_DATABASE, ClientWorld

pytestmark = LIVE_DATABASE

PAGE_SIZE = 10


def _range(world: ClientWorld) -> dict:
    # pyvenice passes strings through as given.
    return {"start_date": world.start.isoformat().replace("+00:00", "Z"),
            "end_date": (world.now + timedelta(hours=1)).isoformat().replace("+00:00", "Z")}


def collect_answers(world: ClientWorld) -> dict:
    calls = [
        ("pages", "get_usage_pages", {**_range(world), "limit": PAGE_SIZE, "sort_order": "asc", "currency": "USD"}),
        ("csv", "get_usage_csv", {**_range(world), "sort_order": "asc"}),
        ("async", "get_usage_async", {**_range(world), "limit": 500, "sort_order": "desc"}),
        ("all", "get_all_usage", {**_range(world), "sort_order": "asc"}),
        ("summary", "get_usage_summary", _range(world)),
    ]
    return clientenv.run_probe(clientenv.PYVENICE, "pyvenice_billing", {
        "base_url": f"{world.base_url}/api/v1", "api_key": world.northwind.management_key,
        "calls": [{"name": name, "method": method, "kwargs": kwargs} for name, method, kwargs in calls],
    })


def _value(answers: dict, name: str, method: str):
    outcome = answers[name]
    assert outcome["ok"], f"pyvenice 0.3.1 Billing.{method} failed: {outcome['error']}"
    return outcome["value"]


def _entries_expected(world: ClientWorld) -> int:
    return len(world.northwind.events) + len(world.northwind.grants)


def test_get_usage_every_page(world, answers):
    """pyvenice `Billing.get_usage(start_date, end_date, currency="USD", page=n, limit=10,
    sort_order="asc")` for every page: UsageResponse pages, pagination from the x-pagination headers."""
    pages = _value(answers, "pages", "get_usage")
    total = _entries_expected(world)
    assert len(pages) == math.ceil(total / PAGE_SIZE)
    for number, page in enumerate(pages, start=1):
        assert page["pagination"] == {"page": number, "limit": PAGE_SIZE, "total": total,
                                      "total_pages": math.ceil(total / PAGE_SIZE)}
    assert_ledger(world, world.northwind, [entry for page in pages for entry in page["data"]])


def test_get_usage_as_csv(world, answers):
    """pyvenice `Billing.get_usage(format="csv")`: the text of every entry of the range, one header row."""
    text = _value(answers, "csv", "get_usage")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == _entries_expected(world)
    assert {"timestamp", "sku", "pricePerUnitUsd", "units", "amount", "currency", "notes",
            "inferenceDetails.requestId"} <= set(rows[0])
    assert sorted(r["inferenceDetails.requestId"] for r in rows if r["inferenceDetails.requestId"]) == sorted(
        event["request_id"] for event in world.northwind.events)


def test_get_usage_async_newest_first(world, answers):
    """pyvenice `Billing.get_usage_async(limit=500, sort_order="desc")`."""
    page = _value(answers, "async", "get_usage_async")
    entries = page["data"]
    assert len(entries) == _entries_expected(world)
    moments = [datetime.fromisoformat(entry["timestamp"].replace("Z", "+00:00")) for entry in entries]
    assert moments == sorted(moments, reverse=True)
    assert_ledger(world, world.northwind, list(reversed(entries)))


def test_get_all_usage(world, answers):
    """pyvenice `Billing.get_all_usage(start_date, end_date, sort_order="asc")` (its own page walk)."""
    entries = _value(answers, "all", "get_all_usage")
    assert len(entries) == _entries_expected(world)
    assert_ledger(world, world.northwind, entries)


def test_get_usage_summary(world, answers):
    """pyvenice `Billing.get_usage_summary(start_date, end_date)`: USD total = grants − usage."""
    summary = _value(answers, "summary", "get_usage_summary")
    tenant = world.northwind
    used = sum(world.cost(tenant, event) for event in tenant.events)
    assert summary["entry_count"] == _entries_expected(world)
    assert close(summary["total_usd"], sum(tenant.grants) - used)
    assert summary["total_vcu"] == 0 and summary["total_diem"] == 0
    assert sum(sku["count"] for sku in summary["by_sku"].values()) == _entries_expected(world)
