"""Server time of every dialect endpoint on the usage benchmark's heaviest organization.

Run after `python -m bench.usage_engine --keep-db` (PostgreSQL): it reads the database that run
left (bench_<name>), gives the heaviest organization's owner AdministratorAccess and a
management key, calls each endpoint through Django's full stack several times and prints the
median and worst server time (the Server-Timing header). The engine's own query figures are in
bench/RESULTS.md.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/test python -m bench.dialects
"""

import os
import statistics
import sys
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

ROUNDS = 3


def main() -> None:
    from bench.django_env import heaviest_organization_owner

    state, member = heaviest_organization_owner()
    from django.core.cache import cache
    from django.db import connection
    from django.test import Client

    from keys import services as key_services
    from portal import services

    organization = member.organization
    secret = key_services.create_management_key(actor=services.SYSTEM, member=member, name="bench").secret
    client = Client(HTTP_AUTHORIZATION=f"Bearer {secret}")
    newest = state.newest_event_at
    end = int(newest.timestamp()) // 86400 * 86400 + 86400
    day, week, month = end - 86400, end - 7 * 86400, end - 30 * 86400
    model_id = connection.cursor()
    model_id.execute("SELECT model_id FROM usage_usagedaily WHERE organization_id = %s GROUP BY model_id "
                     "ORDER BY SUM(requests) DESC LIMIT 1", [organization.pk])
    top_model = model_id.fetchone()[0]
    base = "/api/v1/modelRouter/open/billing/cost/"
    iso = lambda epoch: datetime.fromtimestamp(epoch, tz=UTC).isoformat()  # noqa: E731
    # A cursor deep in usage-history's walk: the page after the first thousand entries of the
    # last 30 days (a keyset page costs what the first one costs, however deep).
    history = client.get("/api/v1/billing/usage-history", {"startTimestamp": iso(month), "pageSize": 1000})
    deep_cursor = history.json()["nextCursor"] if history.status_code == 200 else None
    calls = [
        ("AIone obs/usage 30 days by day,model", "get", "/api/v1/obs/usage",
         {"start_date": datetime.fromtimestamp(month, tz=UTC).date().isoformat(), "group_by": "day,model"}),
        ("AIone obs/dashboard 7 days", "get", "/api/v1/obs/dashboard", {"range_days": 7}),
        ("AIone obs/dashboard 30 days", "get", "/api/v1/obs/dashboard", {"range_days": 30}),
        ("AIone obs/dashboard 90 days", "get", "/api/v1/obs/dashboard", {"range_days": 90}),
        ("ModelRouter overview 30 days", "get", base + "overview", {"startTime": month, "endTime": end}),
        ("ModelRouter trend 30 days daily", "get", base + "trend", {"startTime": month, "endTime": end}),
        ("ModelRouter trend 1 day hourly", "get", base + "trend", {"startTime": day, "endTime": end}),
        ("ModelRouter models 30 days", "get", base + "models", {"startTime": month, "endTime": end}),
        ("ModelRouter model-detail 30 days", "get", base + "model-detail",
         {"startTime": month, "endTime": end, "modelId": top_model, "maxResults": 10}),
        ("ModelRouter breakdown 7 days, 20 rows", "get", base + "breakdown",
         {"startTime": week, "endTime": end, "maxResults": 20}),
        ("ModelRouter breakdown 90 days, 20 rows", "get", base + "breakdown",
         {"startTime": end - 90 * 86400, "endTime": end, "maxResults": 20}),
        ("ModelRouter breakdown 90 days, page 400 of 50", "get", base + "breakdown",
         {"startTime": end - 90 * 86400, "endTime": end, "pageIndex": 400, "pageSize": 50}),
        ("ModelRouter breakdown 1 day hourly, 20 rows", "get", base + "breakdown",
         {"startTime": day, "endTime": end, "maxResults": 20}),
        ("ModelRouter breakdown 7 days hourly, 20 rows", "get", base + "breakdown",
         {"startTime": week, "endTime": end, "maxResults": 20, "granularity": "hourly"}),
        ("Weave calls/stats 7 days, 6 h, p50/p99", "post", "/calls/stats", {
            "project_id": str(organization.uuid), "start": iso(week), "end": iso(end), "timezone": "UTC",
            "usage_metrics": [{"metric": "total_tokens", "aggregations": ["sum"]}],
            "call_metrics": [{"metric": "latency_ms", "aggregations": ["avg"], "percentiles": [50, 99]}]}),
        ("Weave calls/stats 1 day, 5 min", "post", "/calls/stats", {
            "project_id": str(organization.uuid), "start": iso(day), "end": iso(end), "granularity": 300,
            "call_metrics": [{"metric": "call_count", "aggregations": ["sum"]}]}),
        ("Venice billing/usage page 1 (200)", "get", "/api/v1/billing/usage", {"limit": 200}),
        ("Venice billing/usage page 50 (200)", "get", "/api/v1/billing/usage", {"limit": 200, "page": 50}),
        ("Venice billing/usage page 1000 (200)", "get", "/api/v1/billing/usage", {"limit": 200, "page": 1000}),
        ("Venice billing/usage 30 days off the hour, p. 20", "get", "/api/v1/billing/usage",
         {"limit": 200, "page": 20, "sortOrder": "asc", "startDate": iso(month + 1234), "endDate": iso(end - 777)}),
        ("Venice usage-analytics 30d (uncached)", "get", "/api/v1/billing/usage-analytics", {"lookback": "30d"}),
        ("Venice usage-analytics 30d by dates (uncached)", "get", "/api/v1/billing/usage-analytics",
         {"startDate": datetime.fromtimestamp(month, tz=UTC).date().isoformat(),
          "endDate": datetime.fromtimestamp(end - 86400, tz=UTC).date().isoformat()}),
        ("Venice usage-history first page (1000)", "get", "/api/v1/billing/usage-history", {"pageSize": 1000}),
        ("Venice billing/balance", "get", "/api/v1/billing/balance", {}),
        ("r9s management/usage 90 days", "get", "/api/v1/portal/management/usage",
         {"start_time": end - 90 * 86400, "end_time": end}),
        ("r9s management/balance", "get", "/api/v1/portal/management/balance", {}),
    ]
    if deep_cursor:
        calls.append(("Venice usage-history 30 days, 2nd page (1000)", "get", "/api/v1/billing/usage-history",
                      {"cursor": deep_cursor}))
    print(f"organization {organization.name}: {state.events:,} events, newest {newest:%Y-%m-%d %H:%M} UTC")
    print(f"{'endpoint':<44} {'median ms':>10} {'max ms':>10}")
    for label, method, path, params in calls:
        samples = []
        for _ in range(ROUNDS):
            cache.clear()  # measure the work, not the analytics cache
            if method == "get":
                response = client.get(path, params)
            else:
                response = client.post(path, params, content_type="application/json")
            if response.status_code != 200:
                raise SystemExit(f"{label}: HTTP {response.status_code} {response.content[:300]!r}")
            samples.append(float(response["Server-Timing"].split("dur=")[1]))
        print(f"{label:<44} {statistics.median(samples):>10.1f} {max(samples):>10.1f}")


if __name__ == "__main__":
    main()
