"""Latency percentiles from the hourly histograms against the hand-written percentile_cont.

For the heaviest organization: the 30-day hourly p50/p99 query (`usage.query.run`, the
query `bench.usage_engine` times) and the Weave `calls/stats` shape (7 UTC days in 6-hour
buckets, p50/p99), each timed in alternating rounds with the hand-written percentile_cont over
raw events (the benchmark's covering index), and every engine percentile's relative error
against it. The hourly rows and the raw events may live in different databases, so that the
hourly level of a ten-million-event database can be copied, re-encoded and read here while the
hand-written query runs, read-only, where its events are:

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/NAME python -m bench.percentiles \\
        [--hourly-db DB] [--events-db DB] [--rounds 15]

Both default to the database `bench.usage_engine --keep-db` left (bench_NAME).
"""

import argparse
import os
import statistics
import sys
import time
import zoneinfo
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

TOLERANCE = 0.02


def main() -> None:
    import django

    django.setup()
    import psycopg
    from django.db import connection

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hourly-db", help="database whose usage_usagehourly the engine reads")
    parser.add_argument("--events-db", help="database whose usage_usageevent the hand-written query reads")
    parser.add_argument("--rounds", type=int, default=15, help="alternating timed rounds (median reported)")
    args = parser.parse_args()
    if connection.vendor != "postgresql":
        raise SystemExit("bench.percentiles needs PostgreSQL")
    kept = f"bench_{connection.settings_dict['NAME']}"
    connection.settings_dict["NAME"] = args.hourly_db or kept
    connection.close()
    settings = connection.settings_dict
    events = psycopg.connect(host=settings["HOST"] or None, port=settings["PORT"] or None,
                             user=settings["USER"] or None, password=settings["PASSWORD"] or None,
                             dbname=args.events_db or kept, autocommit=True)
    from usage.query import UsageQuery, run
    from usage.timebuckets import Granularity, local_midnight, local_midnight_of

    organization_id, newest = events.execute(
        "SELECT organization_id, newest_event_at FROM usage_usagefillstate ORDER BY events DESC LIMIT 1").fetchone()
    (zone_name,) = events.execute("SELECT timezone FROM portal_organization WHERE id = %s",
                                  [organization_id]).fetchone()
    zone = zoneinfo.ZoneInfo(zone_name)
    print(f"$ python -m bench.percentiles {' '.join(sys.argv[1:])}")
    print(f"started {datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC; hourly rows from {settings['NAME']}, events from "
          f"{events.info.dbname}; organization {organization_id} ({zone_name})")

    # The same ranges as bench.usage_engine (the 30 whole local days before the local midnight
    # of the newest event) and bench.dialects (the 7 UTC days up to the UTC midnight after it).
    end = local_midnight(newest, zone)
    start = local_midnight_of(end.date() - timedelta(days=30), zone)
    utc_end = datetime.fromtimestamp(int(newest.timestamp()) // 86400 * 86400 + 86400, tz=UTC)
    cases = [
        ("30-day hourly p50/p99", UsageQuery(organization_id=organization_id, start=start, end=end, timezone=zone_name,
                                             granularity=Granularity.of("hour"), percentiles=(50.0, 99.0)),
         3600),
        ("Weave 7 days × 6 h p50/p99", UsageQuery(organization_id=organization_id, start=utc_end - timedelta(days=7),
                                                 end=utc_end, timezone="UTC", granularity=Granularity.of(21600),
                                                 percentiles=(50.0, 99.0)), 21600),
    ]
    for label, query, width in cases:
        hand_sql = ("SELECT date_bin(%s, \"timestamp\", %s), count(*), percentile_cont(ARRAY[0.5, 0.99]) "
                    "WITHIN GROUP (ORDER BY latency_ms) FROM usage_usageevent "
                    "WHERE organization_id = %s AND \"timestamp\" >= %s AND \"timestamp\" < %s GROUP BY 1")
        hand_params = [timedelta(seconds=width), query.start, organization_id, query.start, query.end]

        def engine(query: Any = query) -> dict:
            result = run(query, org_timezone=zone_name)
            return {int(row.bucket.start.timestamp()): (row.requests, row.percentiles[50.0], row.percentiles[99.0])
                    for row in result.rows if row.requests}

        def hand(sql: str = hand_sql, params: list = hand_params) -> dict:
            return {int(bucket.timestamp()): (n, float(p[0]), float(p[1]))
                    for bucket, n, p in events.execute(sql, params).fetchall()}

        engine_ms, hand_ms, answers = alternate(engine, hand, args.rounds)
        engine_answer, hand_answer = answers
        counts_equal = sum(engine_answer.get(key, (None,))[0] == value[0] for key, value in hand_answer.items())
        errors = [abs(engine_answer[key][i] - value[i]) / value[i]
                  for key, value in hand_answer.items() if key in engine_answer for i in (1, 2) if value[i]]
        print(f"  {label}: engine {engine_ms:,.1f} ms, hand-written percentile_cont {hand_ms:,.1f} ms, "
              f"{hand_ms / engine_ms:,.1f}×; requests equal in {counts_equal}/{len(hand_answer)} buckets; "
              f"p50/p99 worst error {max(errors, default=0):.2%}, median {statistics.median(errors or [0]):.2%}, "
              f"{sum(e <= TOLERANCE for e in errors)}/{len(errors)} within {TOLERANCE:.0%}")
    print(f"finished {datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC")


def alternate(engine: Callable[[], dict], hand: Callable[[], dict], rounds: int) -> tuple[float, float, tuple]:
    """Medians of `rounds` alternating runs after a warm-up of each (the machine is shared: a
    burst of someone else's load then hits both sides alike)."""
    answers = (engine(), hand())
    engine_times, hand_times = [], []
    for _ in range(rounds):
        for call, times in ((engine, engine_times), (hand, hand_times)):
            started = time.perf_counter()
            call()
            times.append((time.perf_counter() - started) * 1000)
    return statistics.median(engine_times), statistics.median(hand_times), answers


if __name__ == "__main__":
    main()
