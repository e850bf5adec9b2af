"""Days across New York's autumn DST change (1 November 2026 has 25 hours), in every dialect that
buckets by the organization's day: each must put the same events on the same local days."""

from collections import Counter
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from tests import factories
from tests.api_helpers import client_for
from usage.services import ingest_events

NY = ZoneInfo("America/New_York")
FIRST, LAST = datetime(2026, 10, 30, tzinfo=NY), datetime(2026, 11, 3, tzinfo=NY)


@pytest.fixture
def globex(ram_world):
    world = ram_world
    models = [factories.make_model("alpha"), factories.make_model("beta")]
    keys = [factories.make_inference_key(world.sales, owner=world.charlie)[0],
            factories.make_inference_key(factories.make_department(world.globex, "Ops"), owner=world.charlie)[0]]
    events, moment, number = [], FIRST.astimezone(UTC), 0
    while moment < LAST.astimezone(UTC):
        events.append(factories.event(keys[number % 2], models[number % 3 % 2], request_id=f"dst-{number}",
                                      timestamp=moment.isoformat(), status_code=500 if number % 17 == 0 else 200))
        moment += timedelta(minutes=30)
        number += 1
    ingest_events(events)
    expected = Counter(datetime.fromisoformat(e["timestamp"]).astimezone(NY).date().isoformat() for e in events)
    return world, client_for(world.charlie), expected


def test_the_test_data_has_a_25_hour_day(globex):
    _, _, expected = globex
    assert expected["2026-11-01"] == 50 and expected["2026-10-31"] == 48


def test_aione_usage_days(globex):
    world, charlie, expected = globex
    body = charlie.get("/api/v1/obs/usage", {"start_date": "2026-10-30", "end_date": "2026-11-03",
                                             "group_by": "day"}).json()
    assert {row["date"]: row["requests"] for row in body["items"]} == dict(expected)


def test_r9s_days_start_at_local_midnight(globex):
    world, charlie, expected = globex
    body = charlie.get("/api/v1/portal/management/usage", {
        "start_time": int(FIRST.timestamp()), "end_time": int(LAST.timestamp())}).json()
    starts = sorted({r["timestamp"] for r in body["data"]["records"]})
    assert [datetime.fromtimestamp(s, tz=NY).strftime("%Y-%m-%d %H:%M") for s in starts] == [
        f"{day} 00:00" for day in sorted(expected)]
    assert starts[3] - starts[2] == 25 * 3600 or starts[2] - starts[1] == 25 * 3600


def test_modelrouter_daily_trend(globex):
    world, charlie, expected = globex
    import json

    body = charlie.get("/api/v1/modelRouter/open/billing/cost/trend", {
        "startTime": int(FIRST.timestamp()), "endTime": int(LAST.timestamp()), "granularity": "daily"}).json()
    points = body["data"]["points"]
    days = [datetime.fromtimestamp(p["timestamp"], tz=NY).date().isoformat() for p in points]
    assert days == sorted(expected)
    assert [json.loads(json.loads(p["values"]))["total_calls"] for p in points] == [expected[d] for d in days]


def test_weave_calendar_days_in_the_request_zone(globex):
    world, charlie, expected = globex
    body = charlie.post("/calls/stats", {
        "project_id": str(world.globex.uuid), "start": FIRST.isoformat(), "end": LAST.isoformat(),
        "granularity": 86400, "timezone": "America/New_York",
        "call_metrics": [{"metric": "call_count", "aggregations": ["sum"]},
                         {"metric": "error_count", "aggregations": ["sum"]}]}, format="json").json()
    assert [b["timestamp"][:10] for b in body["call_buckets"]] == sorted(expected)
    assert [b["sum_call_count"] for b in body["call_buckets"]] == [expected[d] for d in sorted(expected)]
    assert body["call_buckets"][2]["timestamp"] == "2026-11-01T00:00:00-04:00"
    assert body["call_buckets"][3]["timestamp"] == "2026-11-02T00:00:00-05:00"


def test_dashboard_trend_uses_the_organizations_days(globex, monkeypatch):
    from django.utils import timezone

    world, charlie, expected = globex
    monkeypatch.setattr(timezone, "now", lambda: datetime(2026, 11, 2, 12, tzinfo=NY).astimezone(UTC))
    body = charlie.get("/api/v1/obs/dashboard", {"range_days": 4}).json()
    assert [(d["date"], d["requests"]) for d in body["tech"]["daily_trend"]] == [
        (day, expected[day]) for day in ("2026-10-30", "2026-10-31", "2026-11-01", "2026-11-02")]
