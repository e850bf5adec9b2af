"""The dashboard's server work (`usage.dashboard.dashboard_of`, what AIone's obs/dashboard and the
portal's dashboard page call) on the usage benchmark's heaviest organization, for the last 7, 30
and 90 days ending at the day of the newest event (so every range is full of data, whatever the
clock says), for the organization and for its busiest department (`?team=`).

Each answer is checked against the same dashboard with its distinct conversations counted over
raw events and its peak requests per minute taken from raw events (the reads it replaced).

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/<name> python -m bench.dashboard   # reads bench_<name>
"""

import os
import statistics
import sys
import time
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

ROUNDS = 7
RANGES = (7, 30, 90)


def main() -> None:
    import django

    django.setup()
    from django.db import connection

    if connection.vendor != "postgresql":
        raise SystemExit("bench.dashboard reads the PostgreSQL database bench.usage_engine --keep-db left")
    connection.settings_dict["NAME"] = f"bench_{connection.settings_dict['NAME']}"
    connection.close()

    from portal.models import Department, Organization
    from usage import activity, dashboard
    from usage.models import UsageDepartmentDaily, UsageFillState

    state = UsageFillState.objects.order_by("-events").first()
    organization = Organization.objects.get(pk=state.organization_id)
    busiest = (UsageDepartmentDaily.objects.filter(organization=organization).values("department_id")
               .order_by().annotate(n=django.db.models.Sum("requests")).order_by("-n").first())
    team = Department.objects.get(pk=busiest["department_id"])
    now = state.newest_event_at + timedelta(seconds=1)
    print(f"organization {organization.name} ({organization.timezone}): {state.events:,} events, "
          f"newest {state.newest_event_at:%Y-%m-%d %H:%M} UTC; dashboard_of(now=newest), median of {ROUNDS}")
    print(f"{'dashboard':<34} {'median ms':>10} {'max ms':>10}  answer vs raw-event reads")
    for department in (None, team):
        for days in RANGES:
            def call(days=days, department=department):
                return dashboard.dashboard_of(organization, days, department=department, now=now)

            call()
            samples = []
            for _ in range(ROUNDS):
                started = time.perf_counter_ns()
                answer = call()
                samples.append((time.perf_counter_ns() - started) / 1e6)
            with mock.patch.object(activity, "conversations", lambda *a, **k: None), \
                    mock.patch.object(activity, "peak_requests", lambda *a, **k: None):
                reference = call()
            same = replace(answer) == reference
            label = f"{days} days" + (f", team {team.name}" if department else "")
            print(f"{label:<34} {statistics.median(samples):>10.1f} {max(samples):>10.1f}  "
                  f"{'equal' if same else 'DIFFERENT'} (conversations {answer.conversations:,}, "
                  f"peak/min {answer.peak_requests_per_minute})")
            if not same:
                raise SystemExit(f"{label}: {answer} != {reference}")


if __name__ == "__main__":
    main()
