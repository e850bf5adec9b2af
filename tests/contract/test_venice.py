"""Venice dialect: the billing usage ledger (JSON pages and streamed CSV) and usage analytics."""

import csv
import io
from collections import defaultdict
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal

import pytest
from django.core.cache import cache

from billing.services import grant_credit
from portal.services import SYSTEM
from tests.api_helpers import client_for

USAGE, ANALYTICS = "/api/v1/billing/usage", "/api/v1/billing/usage-analytics"


@pytest.fixture
def alice(history):
    # Two credits inside the history, one exactly at an event's instant (credits sort first there).
    acme = history.world.acme
    tied = next(e for e in history.events if e.organization_id == acme.pk)
    grant_credit(actor=SYSTEM, organization=acme, amount=Decimal("300"), kind="top_up", note="Top-up",
                 at=history.now - timedelta(days=5))
    grant_credit(actor=SYSTEM, organization=acme, amount=Decimal("20"), note="Goodwill", at=tied.timestamp)
    return client_for(history.world.alice)


def _expected(history, descending: bool):
    from billing.models import CreditGrant

    acme = history.world.acme
    entries = [(e.timestamp, 1, e.id, -e.cost, e.request_id) for e in history.events if e.organization_id == acme.pk]
    entries += [(g.created_at, 0, g.id, g.amount, None) for g in CreditGrant.objects.filter(organization=acme)]
    if descending:
        entries.sort(key=lambda t: (t[0], -t[1], t[2]), reverse=True)
    else:
        entries.sort(key=lambda t: (t[0], t[1], t[2]))
    return [(amount, request_id) for _, _, _, amount, request_id in entries]


@pytest.mark.parametrize("order", ["asc", "desc"])
def test_walking_every_page_finds_every_entry_once_in_order(history, alice, order):
    got, page = [], 1
    while True:
        response = alice.get(USAGE, {"limit": 37, "page": page, "sortOrder": order})
        assert response.status_code == 200, response.content
        body = response.json()
        assert response["x-pagination-total"] == str(body["pagination"]["total"])
        assert response["x-pagination-page"] == str(page) and response["x-pagination-limit"] == "37"
        got += [(Decimal(str(e["amount"])), (e["inferenceDetails"] or {}).get("requestId")) for e in body["data"]]
        if page >= body["pagination"]["totalPages"]:
            break
        page += 1
    expected = _expected(history, order == "desc")
    assert got == expected
    assert body["pagination"]["total"] == len(expected) and body["pagination"]["totalPages"] == -(-len(expected) // 37)


def test_entries_carry_the_seed_fields(history, alice, schema_validator):
    body = alice.get(USAGE, {"limit": 500}).json()
    schema_validator(USAGE, "get", body)
    by_request = {e.request_id: e for e in history.events}
    charges = [entry for entry in body["data"] if entry["inferenceDetails"]]
    credits = [entry for entry in body["data"] if entry["inferenceDetails"] is None]
    assert {Decimal(str(c["amount"])) for c in credits} == {Decimal("300"), Decimal("20")}
    for entry in charges:
        event = by_request[entry["inferenceDetails"]["requestId"]]
        assert Decimal(str(entry["amount"])) == -event.cost and entry["currency"] == "CNY"
        assert entry["inferenceDetails"]["promptTokens"] == event.prompt_tokens
        assert entry["inferenceDetails"]["inferenceExecutionTime"] == event.latency_ms
        assert entry["sku"] == f"{event.model.code}-{event.model.modality}"
        assert entry["pricePerUnitUsd"] == 0  # a CNY account: no USD price per unit
    assert all(c["pricePerUnitUsd"] == 0 for c in credits)


def test_csv_is_streamed_with_the_same_rows(history, alice):
    response = alice.get(USAGE, {"sortOrder": "asc"}, HTTP_ACCEPT="text/csv")
    assert response.status_code == 200 and response.streaming
    assert response["Content-Disposition"] == "attachment; filename=billing_usage.csv"
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert list(rows[0]) == ["timestamp", "sku", "pricePerUnitUsd", "units", "amount", "currency", "notes",
                             "inferenceDetails.requestId", "inferenceDetails.inferenceExecutionTime",
                             "inferenceDetails.promptTokens", "inferenceDetails.completionTokens"]
    assert [(Decimal(r["amount"]), r["inferenceDetails.requestId"] or None) for r in rows] == _expected(history, False)


def test_date_range_and_currency_filters(history, alice):
    start = (history.now - timedelta(days=3)).astimezone(UTC)
    body = alice.get(USAGE, {"startDate": start.isoformat(), "limit": 500}).json()
    expected = [e for e in history.events if e.organization_id == history.world.acme.pk and e.timestamp >= start]
    assert body["pagination"]["total"] == len(expected)
    assert alice.get(USAGE, {"currency": "USD"}).json()["pagination"]["total"] == 0  # Acme bills in CNY


@pytest.mark.parametrize("params, field", [
    ({"limit": 501}, "limit"), ({"limit": 0}, "limit"), ({"page": 0}, "page"), ({"sortOrder": "up"}, "sortOrder"),
    ({"currency": "EUR"}, "currency"), ({"startDate": "soon"}, "startDate"),
    ({"startDate": "2026-02-01T00:00:00Z", "endDate": "2026-01-01T00:00:00Z"}, "endDate")],
    ids=["limit-501", "limit-0", "page-0", "sort", "currency", "bad-date", "reversed"])
def test_bad_parameters_in_venice_shape(history, alice, params, field):
    response = alice.get(USAGE, params)
    assert response.status_code == 400
    body = response.json()
    assert body["error"] and field in body["details"] and body["details"][field]["_errors"]


def test_permission_errors_in_venice_shape(history):
    response = client_for(history.world.dora).get(USAGE)
    assert response.status_code == 403 and set(response.json()) == {"error"}


def test_analytics_breakdowns_match_the_raw_events(history, alice, schema_validator):
    # Acme keeps its money in CNY: CNY's places carry the amounts, Venice's USD and DIEM are 0.
    cache.clear()
    body = alice.get(ANALYTICS, {"lookback": "7d"}).json()
    schema_validator(ANALYTICS, "get", body)
    zone = history.world.acme.zone
    today = history.now.astimezone(zone).date()
    events = [e for e in history.events if e.organization_id == history.world.acme.pk
              and today - timedelta(days=6) <= e.timestamp.astimezone(zone).date() <= today]
    assert body["lookback"] == "7d" and body["currency"] == "CNY" and len(body["byDate"]) == 7
    per_day = defaultdict(Decimal)
    for e in events:
        per_day[e.timestamp.astimezone(zone).date().isoformat()] += e.cost
    assert {d["date"]: Decimal(str(d["CNY"])) for d in body["byDate"] if d["CNY"]} == dict(per_day)
    assert all(d["USD"] == 0 and d["DIEM"] == 0 for d in body["byDate"])
    by_model = defaultdict(lambda: [Decimal(0), Decimal(0), Decimal(0), Decimal(0), Decimal(0), 0, 0, 0, 0])
    for e in events:
        totals = by_model[e.model.code]
        totals[0] += e.cost
        totals[1] += e.input_cost
        totals[2] += e.output_cost
        totals[3] += e.cache_read_cost
        totals[4] += e.cache_write_cost
        totals[5] += e.prompt_tokens - e.cached_tokens - e.cache_creation_tokens
        totals[6] += e.completion_tokens
        totals[7] += e.cached_tokens
        totals[8] += e.cache_creation_tokens
    names = {m.code: m.name for m in history.models}
    assert {m["modelId"] for m in body["byModel"]} == set(by_model)
    for item in body["byModel"]:
        cost, input_cost, output_cost, cache_cost, write_cost, inputs, outputs, cached, written = \
            by_model[item["modelId"]]
        assert item["modelName"] == names[item["modelId"]]
        assert Decimal(str(item["totalCny"])) == cost and item["totalUsd"] == 0 and item["totalDiem"] == 0
        if item["modelId"] == "wanx":
            assert item["unitType"] == "images" and item["modelType"] == "IMAGE" and item["breakdown"] is None
            continue
        assert item["unitType"] == "tokens" and item["totalUnits"] == inputs + outputs + cached + written
        kinds = {b["type"]: b for b in item["breakdown"]}
        assert [b["type"] for b in item["breakdown"]] == ["Input", "Output", "Cache Read", "Cache Write"]
        assert (Decimal(str(kinds["Input"]["cny"])), kinds["Input"]["units"]) == (input_cost, inputs)
        assert (Decimal(str(kinds["Output"]["cny"])), kinds["Output"]["units"]) == (output_cost, outputs)
        assert (Decimal(str(kinds["Cache Read"]["cny"])), kinds["Cache Read"]["units"]) == (cache_cost, cached)
        assert (Decimal(str(kinds["Cache Write"]["cny"])), kinds["Cache Write"]["units"]) == (write_cost, written)
        assert sum(Decimal(str(b["cny"])) for b in item["breakdown"]) == cost  # text models: tokens only
        assert all(b["usd"] == 0 and b["diem"] == 0 for b in item["breakdown"])
    assert body["topModels"] == [m["modelName"] for m in body["byModel"]][:8]
    by_key = defaultdict(Decimal)
    for e in events:
        by_key[str(e.key.uuid)] += e.cost
    assert {k["apiKeyId"]: Decimal(str(k["totalCny"])) for k in body["byKey"]} == dict(by_key)
    assert all(k["totalUsd"] == 0 and k["totalDiem"] == 0 for k in body["byKey"])
    # Daily series keyed by the epoch milliseconds of each local midnight, once per currency place.
    midnights = [int(datetime.combine(today - timedelta(days=6 - n), time(), zone).timestamp()) * 1000
                 for n in range(7)]
    for series in ("byModelDaily", "byModelDailyUsd", "byModelDailyCny", "byKeyDaily", "byKeyDailyUsd",
                   "byKeyDailyCny"):
        assert [row["date"] for row in body[series]] == midnights, series
    model_days = defaultdict(Decimal)
    for e in events:
        model_days[(e.timestamp.astimezone(zone).date(), names[e.model.code])] += e.cost
    for row in body["byModelDailyCny"]:
        day = datetime.fromtimestamp(row["date"] / 1000, zone).date()
        assert {name: Decimal(str(v)) for name, v in row.items() if name != "date"} == {
            name: model_days[(day, name)] for name in body["topModels"]}
    assert all(v == 0 for row in body["byModelDaily"] + body["byKeyDailyUsd"] for k, v in row.items() if k != "date")
    assert body["topKeyNames"] == [k["description"] for k in body["byKey"]][:8]


def test_analytics_are_cached_for_ten_minutes_per_query(history, alice):
    from tests import factories
    from usage.services import ingest_events

    cache.clear()
    first = alice.get(ANALYTICS, {"lookback": "2d"}).json()
    key = history.keys["research"]
    ingest_events([factories.event(key, history.models[0], request_id="late",
                                   timestamp=history.now.astimezone(UTC).isoformat(), prompt_tokens=10**6)])
    assert alice.get(ANALYTICS, {"lookback": "2d"}).json() == first  # from the cache
    assert alice.get(ANALYTICS, {"lookback": "3d"}).json()["byDate"][-1] != first["byDate"][-1]  # another query
    cache.clear()
    assert alice.get(ANALYTICS, {"lookback": "2d"}).json() != first


@pytest.mark.parametrize("params, field", [
    ({"lookback": "91d"}, "lookback"), ({"lookback": "week"}, "lookback"),
    ({"startDate": "2026-01-01T00:00:00Z"}, "endDate"),
    ({"lookback": "7d", "startDate": "2026-01-01T00:00:00Z", "endDate": "2026-01-02T00:00:00Z"}, "lookback")],
    ids=["too-long", "not-days", "one-date", "both"])
def test_analytics_rejects_bad_parameters(history, alice, params, field):
    response = alice.get(ANALYTICS, params)
    assert response.status_code == 400 and field in response.json()["details"]


def test_errors_are_json_even_when_csv_was_asked_for(history, alice):
    response = alice.get(USAGE, {"limit": 501}, HTTP_ACCEPT="text/csv")
    assert response.status_code == 400 and response["Content-Type"].startswith("application/json")
    assert "limit" in response.json()["details"]
