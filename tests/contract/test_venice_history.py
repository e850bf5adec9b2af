"""Venice dialect, newer endpoints and client compatibility: `billing/usage-history` (keyset pages
behind an opaque, signed cursor), `billing/balance`, and the shapes venice-py and pyvenice parse
(`pricePerUnitUsd` always a number, usage-analytics in Venice's own field names) for a USD and a
CNY organization. Expected figures are recomputed from the events and grants each test makes."""

import csv
import io
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

import pytest
import time_machine
from django.core.cache import cache

from billing.models import CreditGrant
from billing.services import grant_credit, record_usage
from portal.models import Policy
from portal.services import SYSTEM
from tests import factories
from tests.api_helpers import client_for

HISTORY, BALANCE = "/api/v1/billing/usage-history", "/api/v1/billing/balance"
USAGE, ANALYTICS = "/api/v1/billing/usage", "/api/v1/billing/usage-analytics"

# The fields venice-py's BillingUsageEntry and pyvenice's UsageEntry require, with the JSON types
# their models accept (a number parses into their floats).
VENICE_ENTRY_FIELDS = {"timestamp": str, "sku": str, "pricePerUnitUsd": float, "units": float, "amount": float,
                       "currency": str, "notes": str}


def _number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _parses_as_venice_entry(entry: dict) -> bool:
    return all(_number(entry[name]) if wanted is float else isinstance(entry[name], wanted)
               for name, wanted in VENICE_ENTRY_FIELDS.items())


# --- a USD organization with a known ledger ------------------------------------------------------

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)  # Globex's zone is America/New_York: 04:00 local


@pytest.fixture
def globex(ram_world):
    """Globex (USD): a 40 USD top-up and a 10 USD grant, 25 charged requests over three local
    days (two keys, a text and an image model, one request with no tokens at all)."""
    world = ram_world
    text = factories.make_model("gpt-test", usd=("2", "0.5", "4", "0", "0"))
    image = factories.make_model("img-test", modality="image", usd=("0", "0", "0", "0.04", "0"))
    first = factories.make_inference_key(world.sales, owner=world.charlie, name="batch")[0]
    second = factories.make_inference_key(world.sales, owner=world.charlie, name="chat")[0]
    with time_machine.travel(T0 - timedelta(hours=1), tick=False):
        grant_credit(actor=SYSTEM, organization=world.globex, amount=Decimal("40"), kind="top_up")
        grant_credit(actor=SYSTEM, organization=world.globex, amount=Decimal("10"), note="Welcome")
    events = []
    for n in range(25):
        key = first if n % 3 else second
        model = image if n % 5 == 4 else text
        tokens = {} if model is image else {"prompt_tokens": 1000 * (n + 1), "cached_tokens": 100 * n,
                                            "completion_tokens": 50 * n}
        if n == 7:
            tokens = {"prompt_tokens": 0, "completion_tokens": 0}  # a request that used nothing
        events.append(factories.event(key, model, request_id=f"g-{n}", image_count=2 if model is image else 0,
                                      timestamp=(T0 + timedelta(hours=3 * n)).isoformat(), **tokens))
    with time_machine.travel(T0 + timedelta(days=4), tick=False):
        record_usage(events)
    world.usage_keys, world.text_model, world.image_model = (first, second), text, image
    return world


def _globex_ledger(world, start=None, end=None):
    """(amount, requestId) of every Globex entry in time order, entries before events of an instant."""
    from usage.models import UsageEvent

    rows = [(e.timestamp, 1, e.pk, e.cost * -1, e.request_id)
            for e in UsageEvent.objects.filter(organization=world.globex)]
    rows += [(g.created_at, 0, g.pk, g.amount, None) for g in CreditGrant.objects.filter(organization=world.globex)]
    rows = [r for r in rows if (start is None or r[0] >= start) and (end is None or r[0] < end)]
    rows.sort(key=lambda r: (r[0], r[1], r[2]))
    return [(amount, request_id) for _, _, _, amount, request_id in rows]


def _walk(client, params, **headers):
    """Every page of a walk: (entries, pages, cursors)."""
    entries, pages = [], 0
    response = client.get(HISTORY, params, **headers)
    while True:
        assert response.status_code == 200, response.content
        pages += 1
        body = response.json()
        entries += body["data"]
        assert response.get("x-next-cursor") == body["nextCursor"]
        if body["nextCursor"] is None:
            return entries, pages
        response = client.get(HISTORY, {"cursor": body["nextCursor"]}, **headers)


def test_usage_history_walks_every_entry_once_oldest_first(globex, schema_validator):
    charlie = client_for(globex.charlie)
    entries, pages = _walk(charlie, {"pageSize": 10})
    expected = _globex_ledger(globex)
    assert [(Decimal(str(e["amount"])), (e["inferenceDetails"] or {}).get("requestId")) for e in entries] == expected
    assert pages == -(-len(expected) // 10)  # 27 entries: 3 pages, the last one short
    schema_validator(HISTORY, "get", charlie.get(HISTORY, {"pageSize": 10}).json())
    keys = {str(k.uuid) for k in globex.usage_keys}
    assert {e["apiKeyId"] for e in entries if e["inferenceDetails"]} == keys
    assert all(e["apiKeyId"] is None for e in entries if e["inferenceDetails"] is None)
    assert all(_parses_as_venice_entry(e) for e in entries)


def test_the_cursor_carries_the_filters(globex):
    charlie = client_for(globex.charlie)
    start, end = T0 + timedelta(hours=10), T0 + timedelta(hours=50)
    entries, _ = _walk(charlie, {"startTimestamp": start.isoformat(), "endTimestamp": end.isoformat(),
                                 "pageSize": 10, "currency": "USD"})
    expected = _globex_ledger(globex, start, end)
    assert len(expected) > 10  # more than one page, so the second page's bounds came from the cursor
    assert [(Decimal(str(e["amount"])), e["inferenceDetails"]["requestId"]) for e in entries] == expected
    assert _walk(charlie, {"currency": "DIEM"})[0] == []  # nothing is kept in DIEM
    assert _walk(charlie, {"currency": "EARNED_CREDITS"})[0] == []


def test_default_page_holds_up_to_a_thousand_entries(globex):
    body = client_for(globex.charlie).get(HISTORY).json()
    assert len(body["data"]) == len(_globex_ledger(globex)) and body["nextCursor"] is None


def test_csv_pages_walk_the_same_entries(globex):
    charlie = client_for(globex.charlie)
    rows, cursor, params = [], None, {"pageSize": 10}
    while True:
        response = charlie.get(HISTORY, {"cursor": cursor} if cursor else params, HTTP_ACCEPT="text/csv")
        assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
        assert response["Content-Disposition"].startswith("attachment; filename=")
        page = list(csv.DictReader(io.StringIO(response.content.decode())))
        assert list(page[0])[-1] == "apiKeyId" and "pricePerUnitUsd" in page[0]
        rows += page
        cursor = response.get("x-next-cursor")
        if not cursor:
            break
    assert [(Decimal(r["amount"]), r["inferenceDetails.requestId"] or None) for r in rows] == _globex_ledger(globex)
    assert all(Decimal(r["pricePerUnitUsd"]) >= 0 for r in rows)  # a number on every row, credits too


@pytest.mark.parametrize("params, field", [
    ({"pageSize": 9}, "pageSize"), ({"pageSize": 1001}, "pageSize"), ({"currency": "EUR"}, "currency"),
    ({"startTimestamp": "soon"}, "startTimestamp"),
    ({"startTimestamp": "2026-03-02T00:00:00Z", "endTimestamp": "2026-03-01T00:00:00Z"}, "endTimestamp"),
    ({"startTimestamp": "0001-01-01T00:00:00Z"}, "startTimestamp"),
    ({"endTimestamp": "9999-12-31T23:59:59Z"}, "endTimestamp"),
    ({"cursor": "not-a-cursor"}, "cursor")],
    ids=["page-9", "page-1001", "currency", "bad-date", "reversed", "year-1", "year-9999", "garbage-cursor"])
def test_bad_history_parameters_are_400_in_venice_shape(globex, params, field):
    response = client_for(globex.charlie).get(HISTORY, params)
    assert response.status_code == 400, response.content
    body = response.json()
    assert body["error"] and body["details"][field]["_errors"]


def test_a_continuation_sends_the_cursor_alone(globex):
    charlie = client_for(globex.charlie)
    cursor = charlie.get(HISTORY, {"pageSize": 10}).json()["nextCursor"]
    response = charlie.get(HISTORY, {"cursor": cursor, "pageSize": 20})
    assert response.status_code == 400 and "pageSize" in response.json()["details"]


def test_a_tampered_cursor_is_refused(globex):
    charlie = client_for(globex.charlie)
    cursor = charlie.get(HISTORY, {"pageSize": 10}).json()["nextCursor"]
    head, _, signature = cursor.rpartition(":")
    tampered = head + ":" + ("A" if signature[0] != "A" else "B") + signature[1:]
    response = charlie.get(HISTORY, {"cursor": tampered})
    assert response.status_code == 400 and "cursor" in response.json()["details"]


def test_another_organizations_cursor_and_entries_never_show(globex):
    """Tenant isolation: alice (Acme) sees none of Globex's entries, and Globex's cursor is
    refused for her rather than followed."""
    from usage.services import ingest_events

    acme_key = factories.make_inference_key(globex.research, owner=globex.alice)[0]
    ingest_events([factories.event(acme_key, globex.text_model, request_id="acme-1", timestamp=T0.isoformat())])
    grant_credit(actor=SYSTEM, organization=globex.acme, amount=Decimal("7"))
    alice = client_for(globex.alice)
    entries, _ = _walk(alice, {"pageSize": 10})
    assert [(e["inferenceDetails"] or {}).get("requestId") for e in entries] == [None, "acme-1"] or \
        [(e["inferenceDetails"] or {}).get("requestId") for e in entries] == ["acme-1", None]
    assert all(e["currency"] == "CNY" for e in entries)
    assert _walk(alice, {"pageSize": 10, "currency": "CNY"})[0] == entries  # the account's own currency
    globex_cursor = client_for(globex.charlie).get(HISTORY, {"pageSize": 10}).json()["nextCursor"]
    response = alice.get(HISTORY, {"cursor": globex_cursor})
    assert response.status_code == 400 and "cursor" in response.json()["details"]
    assert "g-" not in response.content.decode()


def test_usage_history_needs_its_action(globex):
    dora = client_for(globex.dora)
    for path in (HISTORY, BALANCE):
        response = dora.get(path)
        assert response.status_code == 403 and set(response.json()) == {"error"}
        assert "billing:" in response.json()["error"]


def test_the_system_policies_grant_the_new_actions(db):
    # Written by portal migration 0008 from the action registry.
    for name in ("ReadOnlyAccess", "BillingFullAccess"):
        actions = Policy.objects.get(organization=None, name=name).document["Statement"][0]["Action"]
        assert {"billing:ListBillingUsageHistory", "billing:GetBalance"} <= set(actions), name


# --- pricePerUnitUsd on a USD account (pyvenice's UsageResponse) ------------------------------

def test_price_per_unit_is_always_a_number_on_a_usd_account(globex, schema_validator):
    from usage.models import UsageEvent

    body = client_for(globex.charlie).get(USAGE, {"limit": 500, "sortOrder": "asc"}).json()
    schema_validator(USAGE, "get", body)
    events = {e.request_id: e for e in UsageEvent.objects.filter(organization=globex.globex).select_related("model")}
    for entry in body["data"]:
        assert _parses_as_venice_entry(entry) and entry["currency"] == "USD"
        details = entry["inferenceDetails"]
        if details is None:
            assert entry["pricePerUnitUsd"] == 0 and entry["units"] == 1  # a credit
            continue
        event = events[details["requestId"]]
        units = (Decimal(event.image_count) if event.model.modality == "image"
                 else Decimal(event.prompt_tokens + event.completion_tokens) / 1_000_000)
        assert Decimal(str(entry["units"])) == units
        expected = (event.cost / units).quantize(Decimal("0.00000001")) if units else Decimal(0)
        assert Decimal(str(entry["pricePerUnitUsd"])) == expected
    assert any(e["pricePerUnitUsd"] == 0 and e["inferenceDetails"] for e in body["data"])  # the zero-unit one
    rows = list(csv.DictReader(io.StringIO(b"".join(client_for(globex.charlie).get(
        USAGE, HTTP_ACCEPT="text/csv").streaming_content).decode())))
    assert all(r["pricePerUnitUsd"] and "E" not in r["pricePerUnitUsd"] for r in rows)


def test_the_currency_filter_accepts_the_accounts_own_currency(history):
    alice = client_for(history.world.alice)  # Acme keeps CNY
    body = alice.get(USAGE, {"currency": "CNY", "limit": 500}).json()
    assert body["pagination"]["total"] == sum(1 for e in history.events if e.organization_id == history.world.acme.pk)
    assert {e["currency"] for e in body["data"]} == {"CNY"}


# --- balance -------------------------------------------------------------------------------------

def test_balance_of_a_usd_account(globex, schema_validator):
    from usage.models import UsageEvent

    with time_machine.travel(T0 + timedelta(days=5), tick=False):
        body = client_for(globex.charlie).get(BALANCE).json()
    schema_validator(BALANCE, "get", body)
    used = sum(e.cost for e in UsageEvent.objects.filter(organization=globex.globex))
    assert body["consumptionCurrency"] == "USD" and body["diemEpochAllocation"] == 0
    assert body["balances"]["diem"] is None
    assert Decimal(str(body["balances"]["usd"])) == Decimal("50") - used
    assert body["canConsume"] is True


def test_balance_of_a_cny_account_keeps_its_currency(history, schema_validator):
    acme = history.world.acme
    grant_credit(actor=SYSTEM, organization=acme, amount=Decimal("12.5"), kind="top_up")
    body = client_for(history.world.alice).get(BALANCE).json()
    schema_validator(BALANCE, "get", body)
    used = sum(e.cost for e in history.events if e.organization_id == acme.pk)
    assert body["consumptionCurrency"] == "CNY" and body["balances"]["usd"] is None
    assert Decimal(str(body["balances"]["cny"])) == Decimal("12.5") - used
    assert body["canConsume"] is (Decimal("12.5") - used > 0)


def test_an_account_with_nothing_left_cannot_consume(ram_world):
    body = client_for(ram_world.charlie).get(BALANCE).json()
    assert body["canConsume"] is False and body["balances"]["usd"] == 0
    account = ram_world.globex.billing_account
    account.credit_limit = Decimal("20")
    account.save()
    assert client_for(ram_world.charlie).get(BALANCE).json()["canConsume"] is True


# --- usage-analytics for a USD account, with dates --------------------------------------------------

def test_analytics_by_dates_for_a_usd_account(globex, schema_validator):
    from usage.models import UsageEvent

    cache.clear()
    zone = globex.globex.zone
    first, last = date(2026, 3, 2), date(2026, 3, 4)
    with time_machine.travel(T0 + timedelta(days=5), tick=False):
        response = client_for(globex.charlie).get(ANALYTICS, {"startDate": first.isoformat(),
                                                              "endDate": last.isoformat()})
    assert response.status_code == 200, response.content
    body = response.json()
    schema_validator(ANALYTICS, "get", body)
    assert body["lookback"] == "2026-03-02:2026-03-04" and body["currency"] == "USD"
    events = [e for e in UsageEvent.objects.filter(organization=globex.globex).select_related("model", "key")
              if first <= e.timestamp.astimezone(zone).date() <= last]
    assert [d["date"] for d in body["byDate"]] == ["2026-03-02", "2026-03-03", "2026-03-04"]  # endDate included
    for day in body["byDate"]:
        expected = sum((e.cost for e in events if e.timestamp.astimezone(zone).date().isoformat() == day["date"]),
                       Decimal(0))
        assert Decimal(str(day["USD"])) == expected and day["DIEM"] == 0 and set(day) == {"date", "USD", "DIEM"}
    by_name = {m["modelName"]: m for m in body["byModel"]}
    text = [e for e in events if e.model.code == "gpt-test"]
    image = [e for e in events if e.model.code == "img-test"]
    assert Decimal(str(by_name["Gpt-Test"]["totalUsd"])) == sum(e.cost for e in text)
    assert by_name["Gpt-Test"]["totalDiem"] == 0 and by_name["Gpt-Test"]["unitType"] == "tokens"
    assert [b["type"] for b in by_name["Gpt-Test"]["breakdown"]] == ["Input", "Output", "Cache Read", "Cache Write"]
    assert sum(Decimal(str(b["usd"])) for b in by_name["Gpt-Test"]["breakdown"]) == sum(e.cost for e in text)
    assert by_name["Img-Test"]["totalUnits"] == sum(e.image_count for e in image)
    assert {k["description"]: Decimal(str(k["totalUsd"])) for k in body["byKey"]} == {
        name: sum(e.cost for e in events if e.key.name == name) for name in {e.key.name for e in events}}
    assert all(k["totalDiem"] == 0 for k in body["byKey"])
    midnights = [int(datetime.combine(first + timedelta(days=n), time(), zone).timestamp()) * 1000 for n in range(3)]
    assert [row["date"] for row in body["byModelDailyUsd"]] == midnights
    assert sum(Decimal(str(v)) for row in body["byModelDailyUsd"] for k, v in row.items() if k != "date") == \
        sum(e.cost for e in events)
    assert all(v == 0 for row in body["byModelDaily"] for k, v in row.items() if k != "date")  # DIEM
    assert "byModelDailyCny" not in body


@pytest.mark.parametrize("params, field", [
    ({"startDate": "2026-03-04", "endDate": "2026-03-02"}, "endDate"),
    ({"startDate": "2026-01-01", "endDate": "2026-04-01"}, "endDate"),
    ({"startDate": "2026-03-02", "endDate": "2026-03-04T00:00:00Z"}, "endDate"),
    ({"startDate": "0001-01-01", "endDate": "0001-01-02"}, "startDate"),
    ({"startDate": "9999-12-30", "endDate": "9999-12-31"}, "startDate"),
    ({"startDate": "2026-02-30", "endDate": "2026-03-02"}, "startDate")],
    ids=["reversed", "over-90-days", "mixed", "year-1", "year-9999", "no-such-day"])
def test_analytics_rejects_bad_dates(globex, params, field):
    response = client_for(globex.charlie).get(ANALYTICS, params)
    assert response.status_code == 400 and field in response.json()["details"]


def test_a_one_day_range_is_that_day(globex):
    cache.clear()
    with time_machine.travel(T0 + timedelta(days=5), tick=False):
        body = client_for(globex.charlie).get(ANALYTICS, {"startDate": "2026-03-03", "endDate": "2026-03-03"}).json()
    assert body["lookback"] == "2026-03-03:2026-03-03" and [d["date"] for d in body["byDate"]] == ["2026-03-03"]


@pytest.mark.parametrize("first, last", [("1970-01-02", "1970-01-03"), ("2199-12-30", "2199-12-31"),
                                         ("1970-01-02T00:00:00Z", "1970-01-03T00:00:00Z")],
                         ids=["first-days", "last-days", "first-instants"])
def test_analytics_at_the_ends_of_the_accepted_range(globex, first, last):
    cache.clear()
    response = client_for(globex.charlie).get(ANALYTICS, {"startDate": first, "endDate": last})
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["byModel"] == [] and all(d["USD"] == 0 for d in body["byDate"])
    assert body["lookback"] == f"{first}:{last}"


@pytest.mark.parametrize("start, end", [("1970-01-01T00:00:00Z", "1970-01-02T00:00:00Z"),
                                        ("2199-12-30T00:00:00Z", "2199-12-31T23:59:59Z")], ids=["epoch", "year-2199"])
def test_usage_history_at_the_ends_of_time(globex, start, end):
    response = client_for(globex.charlie).get(HISTORY, {"startTimestamp": start, "endTimestamp": end})
    assert response.status_code == 200 and response.json() == {"data": [], "nextCursor": None}


@pytest.mark.parametrize("endpoint, params, field", [
    (ANALYTICS, {"startDate": "2199-12-31", "endDate": "2200-01-01"}, "endDate"),
    (ANALYTICS, {"startDate": "9998-12-30", "endDate": "9998-12-31"}, "startDate"),
    (HISTORY, {"startTimestamp": "2200-01-01T00:00:00Z"}, "startTimestamp"),
    (HISTORY, {"endTimestamp": "9998-12-31T23:59:59Z"}, "endTimestamp"),
], ids=["analytics-2200", "analytics-9998", "history-2200", "history-9998"])
def test_times_past_the_platforms_range_are_refused_naming_the_parameter(globex, endpoint, params, field):
    """Venice's dates follow the one range rule of every dialect (usage.timebuckets: 1970 to 2200)."""
    cache.clear()
    response = client_for(globex.charlie).get(endpoint, params)
    assert response.status_code == 400, response.content
    assert field in response.json()["details"]


def test_a_walk_across_a_credit_tied_with_an_event(history):
    """Acme's history with a credit at the very instant of an event (credits sort first there)
    and a top-up between events: small pages still find every entry once, in ledger order."""
    from tests.contract.test_venice import _expected

    acme = history.world.acme
    tied = next(e for e in history.events if e.organization_id == acme.pk)
    grant_credit(actor=SYSTEM, organization=acme, amount=Decimal("300"), kind="top_up",
                 at=history.now - timedelta(days=5))
    grant_credit(actor=SYSTEM, organization=acme, amount=Decimal("20"), at=tied.timestamp)
    entries, pages = _walk(client_for(history.world.alice), {"pageSize": 13})
    expected = _expected(history, descending=False)
    assert [(Decimal(str(e["amount"])), (e["inferenceDetails"] or {}).get("requestId")) for e in entries] == expected
    assert pages == -(-len(expected) // 13)
