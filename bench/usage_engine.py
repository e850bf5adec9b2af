"""Usage engine benchmark on PostgreSQL: ingestion with every rollup level maintained, the query
engine against hand-written SQL over raw events, keyset export depth, and storage.

In one run, on a throwaway database filled with a deterministic synthetic workload (50
organizations in mixed zones, 500 departments, 5,000 keys, 30 models, 90 days, skewed popularity):

1. ingestion throughput of `usage.services.ingest_events` (validation, rating, the insert and all
   five rollup levels folded in the same transaction) next to a plain `COPY` of the same stored
   rows into a bare table without indexes or constraints, as a ratio;
2. for the heaviest organization (about a fifth of all events), the engine's time
   (`usage.query.run`) for 90-day daily totals by model, 30-day hourly p50/p99 latency, top
   departments by cost and 7-day 5-minute buckets, each next to a hand-written GROUP BY /
   percentile_cont over `usage_usageevent` with a covering index built for it, and the answers
   checked equal (sums exactly, costs as Decimal at 8 places, percentiles within 2 %);
3. `export_events`: the first page against a page about a million rows deep (keyset paging);
4. table and index sizes of the raw table against each rollup table.

It ends with one table of figures, targets and PASS/MISS (Markdown, for bench/RESULTS.md).

Run from the project root (10 million events by default; `--events 200000` for a quick run):
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/test python -m bench.usage_engine [--events N] [--keep-db]
"""

import argparse
import contextlib
import functools
import itertools
import math
import os
import platform
import random
import statistics
import sys
import tempfile
import time
import zoneinfo
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from tqdm import tqdm

from bench.django_env import throwaway_database

# --- the workload -------------------------------------------------------------------------------

END = datetime(2026, 11, 15, tzinfo=UTC)  # fixed, so every run generates the same events
DAYS = 90
START = END - timedelta(days=DAYS)
ORGANIZATIONS, DEPARTMENTS, KEYS, MODELS = 50, 500, 5000, 30
BATCH = 1000  # usage.services.MAX_BATCH: what the gateway sends per call
WORLD_SEED, EVENT_SEED = 20261115, 7
# The three heaviest organizations get these zones (no DST, DST inside the window, +05:30);
# the rest cycle through the others, including a +05:45 zone.
ZONES = ("Asia/Shanghai", "America/New_York", "Asia/Kolkata", "Europe/London", "Asia/Tokyo", "UTC",
         "America/Los_Angeles", "Asia/Kathmandu", "Europe/Berlin", "Australia/Sydney", "Asia/Singapore")
ORG_ZIPF = 1.0  # 1/rank over 50 organizations: the first has 1/H(50) ≈ 22 % of the traffic
KEY_ZIPF, MODEL_ZIPF = 1.1, 1.2
ERROR_RATE = 0.02
# (status, error_type) of failed requests, repeated by how often each happens.
FAILURES = [(429, "rate_limited")] * 10 + [(500, "upstream_error")] * 4 + [(503, "overloaded")] * 3 + [
    (400, "invalid_request")] * 3
DISCOUNTS = ("1", "1", "1", "0.95", "0.9", "0.8")
EXPORT_PAGE = 1000
EXPORT_DEPTH = 1_000_000
COVERING_INDEX = "bench_usageevent_org_time_covering"
BARE_TABLE = "bench_copy_target"
INDEXED_TABLE = "bench_copy_indexed"
ROLLUP_TABLES = ("usage_usagefine15", "usage_usagehourly", "usage_usagekeydaily", "usage_usagedaily",
                 "usage_usagedepartmentdaily",
                 "usage_usagemodeldaily", "usage_usagefillstate")

# Targets of the issue.
INGEST_VS_COPY_MIN = 0.40
ROLLUP_QUERY_MAX_MS = 100.0
ROLLUP_SPEEDUP_MIN = 10.0
RAW_QUERY_RATIO_MAX = 1.5
PERCENTILE_TOLERANCE = 0.02
# "A page a million rows deep costs what the first page costs", read as: within 1.5× of it.
EXPORT_DEPTH_RATIO_MAX = 1.5


@dataclass
class World:
    org_ids: list[int]
    org_zones: list[str]
    org_weights: list[float]
    org_keys: list[list[int]]  # indexes into key_uuids, per organization
    org_key_cum: list[list[float]]  # cumulative popularity of those keys
    key_uuids: list[str]
    model_codes: list[str]
    model_kinds: list[str]
    model_cum: list[float]
    model_latency_mu: list[float]  # log of the model's median latency in ms


def _apportion(total: int, weights: list[float], minimum: int) -> list[int]:
    """Split `total` by `weights` (largest remainder) with at least `minimum` each; sums exactly."""
    rest = total - minimum * len(weights)
    scale = rest / sum(weights)
    exact = [w * scale for w in weights]
    counts = [int(x) for x in exact]
    by_remainder = sorted(range(len(weights)), key=lambda i: exact[i] - counts[i], reverse=True)
    for i in by_remainder[: rest - sum(counts)]:
        counts[i] += 1
    return [c + minimum for c in counts]


def _price(value: Decimal) -> str:
    return str(value.quantize(Decimal("0.000001")))


def build_world() -> World:
    """Organizations, departments, keys and priced models, through the product's own services."""
    from tests import factories

    rng = random.Random(WORLD_SEED)
    org_weights = [1 / (rank + 1) ** ORG_ZIPF for rank in range(ORGANIZATIONS)]
    # Bigger customers have more teams and keys, but not in proportion to their traffic.
    sizes = [math.sqrt(w) for w in org_weights]
    department_counts = _apportion(DEPARTMENTS, sizes, 3)
    key_counts = _apportion(KEYS, sizes, 20)

    org_ids, org_zones, org_keys, org_key_cum, key_uuids = [], [], [], [], []
    for rank in tqdm(range(ORGANIZATIONS), desc="world: organizations, departments, keys", unit="org"):
        zone = ZONES[rank % len(ZONES)]
        currency = "CNY" if zone == "Asia/Shanghai" or rank % 3 == 0 else "USD"
        organization = factories.make_organization(f"Bench org {rank + 1:02d}", timezone=zone, currency=currency)
        departments = [
            factories.make_department(organization, f"Team {number + 1:03d}", discount=Decimal(rng.choice(DISCOUNTS)))
            for number in range(department_counts[rank])
        ]
        indexes = []
        for number in range(key_counts[rank]):
            key, _secret = factories.make_inference_key(departments[number % len(departments)],
                                                        name=f"bench key {rank + 1}-{number + 1}")
            indexes.append(len(key_uuids))
            key_uuids.append(str(key.uuid))
        # Popularity by a shuffled rank, so the busy keys are spread over the departments.
        ranks = list(range(len(indexes)))
        rng.shuffle(ranks)
        org_ids.append(organization.pk)
        org_zones.append(zone)
        org_keys.append(indexes)
        org_key_cum.append(list(itertools.accumulate(1 / (r + 1) ** KEY_ZIPF for r in ranks)))

    codes, kinds, latency_mu = [], [], []
    for number in range(MODELS):
        kind = "image" if number in (11, 23) else "video" if number == 27 else "vl" if number % 7 == 3 else "llm"
        code = f"bench-{kind}-{number + 1:02d}"
        cny_input = Decimal(rng.choice(("0.3", "0.8", "1", "2", "4", "6", "12", "16", "24")))
        cny = (cny_input, cny_input / 5, cny_input * rng.choice((2, 3, 4)),
               Decimal("0.2") if kind == "image" else Decimal(0), Decimal("0.5") if kind == "video" else Decimal(0))
        usd = tuple(value / 7 for value in cny)
        model = factories.make_model(code, modality=kind, cny=tuple(_price(v) for v in cny),
                                     usd=tuple(_price(v) for v in usd))
        if number < 5:
            # A price cut in the middle of the window: rating must pick the price in force.
            cut = END - timedelta(days=45)
            factories.add_price(model, "CNY", cut, tuple(_price(v * Decimal("0.8")) for v in cny))
            factories.add_price(model, "USD", cut, tuple(_price(v * Decimal("0.8")) for v in usd))
        codes.append(code)
        kinds.append(kind)
        median_ms = {"image": 6000, "video": 30000}.get(kind, 350 + 60 * number)
        latency_mu.append(math.log(median_ms))
    model_cum = list(itertools.accumulate(1 / (rank + 1) ** MODEL_ZIPF for rank in range(MODELS)))
    return World(org_ids, org_zones, org_weights, org_keys, org_key_cum, key_uuids, codes, kinds, model_cum,
                 latency_mu)


def _rhythm(moment: datetime, zone: zoneinfo.ZoneInfo) -> float:
    """Relative traffic at `moment` for a customer in `zone`: a working-day bump, quiet weekends."""
    local = moment.astimezone(zone)
    hour = local.hour + local.minute / 60
    level = 0.15 + math.exp(-((hour - 14.5) ** 2) / (2 * 3.5**2))
    return level * (0.55 if local.weekday() >= 5 else 1.0)


def generate(world: World, total: int) -> Iterator[list[dict[str, Any]]]:
    """`total` gateway events in time order over the 90 days, in batches of BATCH. Deterministic.

    Choices are drawn in bulk per hour (organization by the hour's weights, then keys per
    organization, models, offsets) so the per-event work is a few random numbers and one dict."""
    rng = random.Random(EVENT_SEED)
    rand, lognormal = rng.random, rng.lognormvariate
    hours = DAYS * 24
    zones = {name: zoneinfo.ZoneInfo(name) for name in set(world.org_zones)}
    zone_rhythm = {
        name: [_rhythm(START + timedelta(hours=h, minutes=30), zone) for h in range(hours)]
        for name, zone in zones.items()
    }
    org_range = range(len(world.org_ids))
    hour_org_weights = [
        [world.org_weights[o] * zone_rhythm[world.org_zones[o]][h] for o in org_range] for h in range(hours)
    ]
    # Events per hour: round the running total, so the counts add up to exactly `total`.
    hour_totals = [sum(weights) for weights in hour_org_weights]
    grand = sum(hour_totals)
    counts, running, emitted = [], 0.0, 0
    for weight in hour_totals:
        running += weight
        target = round(running / grand * total)
        counts.append(target - emitted)
        emitted = target
    model_range = range(len(world.model_codes))
    ms_range = range(3_600_000)
    ops = {"llm": "chat.completions", "vl": "chat.completions", "image": "images.generate",
           "video": "videos.generate"}
    batch: list[dict[str, Any]] = []
    sequence = 0
    for h, count in enumerate(counts):
        if not count:
            continue
        prefix = (START + timedelta(hours=h)).strftime("%Y-%m-%dT%H")
        orgs = rng.choices(org_range, weights=hour_org_weights[h], k=count)
        pools = {
            o: iter(rng.choices(world.org_keys[o], cum_weights=world.org_key_cum[o], k=n))
            for o, n in sorted(Counter(orgs).items())
        }
        models = rng.choices(model_range, cum_weights=world.model_cum, k=count)
        offsets = sorted(rng.choices(ms_range, k=count))
        for i in range(count):
            m, ms, key = models[i], offsets[i], next(pools[orgs[i]])
            kind = world.model_kinds[m]
            latency = int(lognormal(world.model_latency_mu[m], 0.5)) + 1
            prompt = completion = cached = images = video = 0
            if rand() < ERROR_RATE:
                status, error_type = FAILURES[int(rand() * len(FAILURES))]
                prompt = int(lognormal(6.5, 1.0))
                latency = latency // 5 + 1  # failures return early
            else:
                status, error_type = 200, None
                if kind == "image":
                    prompt, images = int(lognormal(4.0, 0.5)), 1 + int(rand() * 4)
                elif kind == "video":
                    prompt, video = int(lognormal(4.0, 0.5)), 5 + int(rand() * 11)
                else:
                    prompt, completion = int(lognormal(6.7, 1.0)), int(lognormal(5.6, 0.9))
                    if rand() < 0.25:
                        cached = prompt // 2
            sequence += 1
            batch.append({
                "request_id": f"bench-{sequence:09d}",
                "timestamp": f"{prefix}:{ms // 60000:02d}:{ms // 1000 % 60:02d}.{ms % 1000:03d}+00:00",
                "key_id": world.key_uuids[key],
                "model": world.model_codes[m],
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "cached_tokens": cached,
                "image_count": images,
                "video_seconds": video,
                "input_chars": prompt * 4,
                "output_chars": completion * 4,
                "latency_ms": latency,
                "status_code": status,
                "error_type": error_type,
                "op_name": ops[kind],
                "conversation_id": f"conv-{key}-{int(rand() * 300)}" if rand() < 0.35 else None,
            })
            if len(batch) == BATCH:
                yield batch
                batch = []
    if batch:
        yield batch


# --- measuring helpers ----------------------------------------------------------------------------

def sql(statement: str, params: list[Any] | tuple[Any, ...] = ()) -> list[tuple]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(statement, params or None)
        return cursor.fetchall() if cursor.description else []


def timed(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """Median wall time in ms over `repeats` runs after one warm-up (plans, caches), and the answer."""
    answer = fn()
    samples = []
    for _ in range(repeats):
        started = time.perf_counter_ns()
        answer = fn()
        samples.append(time.perf_counter_ns() - started)
    return statistics.median(samples) / 1e6, answer


def mib(size: int) -> str:
    return f"{size / 2**20:,.1f} MiB"


@dataclass
class Figures:
    """Everything the summary prints."""

    events: int = 0
    ingest_seconds: float = 0.0
    ingest_insert_seconds: float = 0.0
    generate_seconds: float = 0.0
    copy_rows: int = 0
    copy_seconds: float = 0.0
    indexed_copy_seconds: float = 0.0
    queries: list[dict[str, Any]] = field(default_factory=list)
    export: dict[str, Any] = field(default_factory=dict)
    sizes: list[tuple[str, int, int, int, int]] = field(default_factory=list)


# --- phase 1: ingestion ---------------------------------------------------------------------------

def ingest(world: World, total: int, figures: Figures) -> None:
    """Every event through ingest_events, a batch of 1000 at a time, in time order."""
    from usage import services

    # Split the service's time into insert and rollup folding by wrapping its two steps (the
    # wrappers cost a few µs per batch); the rest is validation, lookups, rating and commit.
    spent = {"insert": 0, "commit": 0}

    def clocked(fn: Callable[..., Any], slot: str) -> Callable[..., Any]:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter_ns()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[slot] += time.perf_counter_ns() - started
        return wrapper

    from django.conf import settings
    from django.db import connection

    # Folded in the ingest transaction whatever the environment's broker says, so that the figure
    # includes every level and the queries below read complete rollups.
    settings.USAGE_FOLD_IN_TRANSACTION = True
    # _store_new stores, queues and (USAGE_FOLD_IN_TRANSACTION, the default without a broker, as
    # here) folds the batch into every level in the same transaction: the figure this bench
    # has always reported.
    original_store = services._store_new
    services._store_new = clocked(original_store, "insert")
    connection.commit = clocked(connection.commit, "commit")  # the instance's, so ingest_events' atomic() uses it
    in_service = 0
    started = time.perf_counter_ns()
    try:
        with tqdm(total=total, desc="ingest_events", unit="ev", unit_scale=True, mininterval=2,
                  smoothing=0.05) as bar:
            for number, batch in enumerate(generate(world, total), 1):
                before = time.perf_counter_ns()
                result = services.ingest_events(batch)
                in_service += time.perf_counter_ns() - before
                if result.accepted != len(batch):
                    raise SystemExit(f"batch {number}: {result.accepted} of {len(batch)} accepted")
                bar.update(len(batch))
                if number % 25 == 0:
                    bar.set_postfix_str(f"service {bar.n / (in_service / 1e9):,.0f} ev/s", refresh=False)
    finally:
        services._store_new = original_store
        del connection.commit
    wall = (time.perf_counter_ns() - started) / 1e9
    figures.events = total
    figures.ingest_seconds = in_service / 1e9
    figures.ingest_insert_seconds = spent["insert"] / 1e9
    figures.generate_seconds = wall - figures.ingest_seconds
    print(f"ingested {total:,} events in {figures.ingest_seconds:,.1f} s inside ingest_events "
          f"({total / figures.ingest_seconds:,.0f} events/s); generating them took {figures.generate_seconds:,.1f} s")
    print(f"  of which: store and fold (COPY into staging, the insert, the queue row, the fold into every level, "
          f"their histograms and the fill state) {figures.ingest_insert_seconds:,.1f} s; "
          f"COMMIT (WAL flush, synchronous_commit on) {spent['commit'] / 1e9:,.1f} s; validation + lookups + rating "
          f"{figures.ingest_seconds - figures.ingest_insert_seconds - spent['commit'] / 1e9:,.1f} s")


def check_rollups(total: int) -> None:
    """Every level must account for every stored event: the rollups are maintained, not sampled."""
    counts = {"raw events": sql("SELECT count(*) FROM usage_usageevent")[0][0]}
    for table in ROLLUP_TABLES[:-1]:
        counts[table.removeprefix("usage_usage")] = sql(f"SELECT coalesce(sum(requests), 0) FROM {table}")[0][0]
    counts["hourly latency histograms"] = sql(
        "SELECT coalesce(sum(latency_bins[cardinality(latency_bins)]), 0) FROM usage_usagehourly")[0][0]
    counts["fill state"] = sql("SELECT coalesce(sum(events), 0) FROM usage_usagefillstate")[0][0]
    print("events accounted for per level: " + ", ".join(f"{name} {int(n):,}" for name, n in counts.items()))
    wrong = {name: n for name, n in counts.items() if int(n) != total}
    if wrong:
        raise SystemExit(f"rollups do not add up to {total:,} events: {wrong}")
    units = sql("SELECT (SELECT sum(cost) * 100000000 FROM usage_usageevent), "
                "(SELECT sum(cost_units) FROM usage_usagefine15), (SELECT sum(cost_units) FROM usage_usagedaily)")[0]
    if not (int(units[0]) == int(units[1]) == int(units[2])):
        raise SystemExit(f"cost units differ between raw, fine and daily: {units}")


# --- phase 2: the COPY baseline ---------------------------------------------------------------------

def copy_baseline(limit: int | None, figures: Figures) -> None:
    """COPY the stored rows (every column of usage_usageevent, values as ingested) into a bare
    table: no indexes, no constraints, no rollups. The rows are dumped to a file first, outside the
    timing, so the figure is what the server takes to load them."""
    from django.db import connection

    total = sql("SELECT count(*) FROM usage_usageevent")[0][0]
    rows = total if limit is None else min(limit, total)
    sql(f"DROP TABLE IF EXISTS {BARE_TABLE}")
    # LIKE copies column types and NOT NULL and nothing else; drop the NOT NULLs too.
    sql(f"CREATE TABLE {BARE_TABLE} (LIKE usage_usageevent)")
    for (column,) in sql("SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 "
                         "AND attnotnull", [BARE_TABLE]):
        sql(f'ALTER TABLE {BARE_TABLE} ALTER COLUMN "{column}" DROP NOT NULL')
    with tempfile.NamedTemporaryFile(prefix="bench-copy-", suffix=".tsv", dir="/tmp") as dump:
        with connection.cursor() as cursor:
            with cursor.cursor.copy(f"COPY (SELECT * FROM usage_usageevent ORDER BY id LIMIT {rows}) TO STDOUT") as out:
                for chunk in out:
                    dump.write(chunk)
        dump.flush()
        size = dump.tell()
        dump.seek(0)
        started = time.perf_counter_ns()
        # Autocommit: the COPY is its own transaction, committed (WAL flushed) before the clock stops.
        with connection.cursor() as cursor:
            with cursor.cursor.copy(f"COPY {BARE_TABLE} FROM STDIN") as copy:
                while chunk := dump.read(1 << 20):
                    copy.write(chunk)
        seconds = (time.perf_counter_ns() - started) / 1e9
        # The floor under any ingestion that keeps the raw table's indexes (primary key, unique
        # request_id, organization × time, key × time): the same COPY into a table that has them.
        sql(f"DROP TABLE IF EXISTS {INDEXED_TABLE}")
        sql(f"CREATE TABLE {INDEXED_TABLE} (LIKE usage_usageevent INCLUDING INDEXES)")
        dump.seek(0)
        started = time.perf_counter_ns()
        with connection.cursor() as cursor:
            with cursor.cursor.copy(f"COPY {INDEXED_TABLE} FROM STDIN") as copy:
                while chunk := dump.read(1 << 20):
                    copy.write(chunk)
        figures.indexed_copy_seconds = (time.perf_counter_ns() - started) / 1e9
        sql(f"DROP TABLE {INDEXED_TABLE}")
    print(f"COPY of the same rows into a table with the raw table's indexes: {figures.indexed_copy_seconds:,.1f} s, "
          f"{rows / figures.indexed_copy_seconds:,.0f} rows/s")
    loaded = sql(f"SELECT count(*) FROM {BARE_TABLE}")[0][0]
    if loaded != rows:
        raise SystemExit(f"COPY loaded {loaded} of {rows} rows")
    figures.copy_rows, figures.copy_seconds = rows, seconds
    bare_size = sql(f"SELECT pg_total_relation_size('{BARE_TABLE}')")[0][0]
    scope = "all" if rows == total else "a sample of"
    print(f"COPY of {scope} {rows:,} stored rows ({mib(size)} of text) into a bare table: {seconds:,.1f} s, "
          f"{rows / seconds:,.0f} rows/s; the bare table takes {mib(bare_size)}")
    sql(f"DROP TABLE {BARE_TABLE}")


# --- phase 3: queries -----------------------------------------------------------------------------

def local_midnight_of(day: date, zone: zoneinfo.ZoneInfo) -> datetime:
    from usage.timebuckets import local_midnight

    return local_midnight(datetime(day.year, day.month, day.day, 12, tzinfo=zone), zone)


def compare(engine: dict[Any, tuple], hand: dict[Any, tuple]) -> tuple[int, int, str]:
    """(groups that differ, groups compared, first difference)."""
    keys = set(engine) | set(hand)
    differing = sorted((k for k in keys if engine.get(k) != hand.get(k)), key=str)
    example = ""
    if differing:
        k = differing[0]
        example = f"{k}: engine {engine.get(k)} vs hand-written {hand.get(k)}"
    return len(differing), len(keys), example


def bucket_index(moment: datetime, origin: int, width: int) -> int:
    return (int(moment.timestamp()) - origin) // width


def run_queries(organization_id: int, zone_name: str, repeats: int, figures: Figures, explain: bool) -> None:
    from usage.query import UsageQuery, run
    from usage.timebuckets import Granularity

    zone = zoneinfo.ZoneInfo(zone_name)
    # Whole local days of the organization, ending at the last local midnight inside the data.
    end = local_midnight_of(END.astimezone(zone).date(), zone)

    def days_back(n: int) -> datetime:
        return local_midnight_of(end.date() - timedelta(days=n), zone)

    where = 'organization_id = %s AND "timestamp" >= %s AND "timestamp" < %s'

    # 1. 90-day daily totals by model.
    start = days_back(90)
    q1 = UsageQuery(organization_id=organization_id, start=start, end=end, timezone=zone_name,
                    granularity=Granularity.of("day"), group_by=("model",))

    def engine_daily() -> tuple[str, dict]:
        result = run(q1)
        return result.level, {
            (row.bucket.key, row.group["model"]): (row.requests, row.errors, row.prompt_tokens,
                                                   row.completion_tokens, row.cost)
            for row in result.rows if row.requests}

    def hand_daily() -> dict:
        rows = sql(f'SELECT ("timestamp" AT TIME ZONE %s)::date, model_id, count(*), '
                   f"count(*) FILTER (WHERE status_code >= 400), sum(prompt_tokens), sum(completion_tokens), "
                   f"sum(cost) FROM usage_usageevent WHERE {where} GROUP BY 1, 2",
                   [zone_name, organization_id, start, end])
        return {(d, m): (n, e, int(p), int(c), cost) for d, m, n, e, p, c, cost in rows}

    measure_pair(figures, "90-day daily totals by model", engine_daily, hand_daily, repeats, explain)

    # 2. 30-day hourly p50/p99 latency.
    start = days_back(30)
    origin = int(start.timestamp())  # the engine aligns fixed widths to the local midnight of the start
    q2 = UsageQuery(organization_id=organization_id, start=start, end=end, timezone=zone_name,
                    granularity=Granularity.of("hour"), percentiles=(50.0, 99.0))
    percentile_sql = (f"SELECT date_bin('1 hour', \"timestamp\", %s), count(*), "
                      f"percentile_{{kind}}(ARRAY[0.5, 0.99]) WITHIN GROUP (ORDER BY latency_ms) "
                      f"FROM usage_usageevent WHERE {where} GROUP BY 1")

    def engine_hourly() -> tuple[str, dict]:
        result = run(q2)
        level = f"{result.level} (sums) + {result.percentile_level} (percentiles)"
        return level, {row.bucket.key: (row.requests, row.percentiles[50.0], row.percentiles[99.0])
                       for row in result.rows if row.requests}

    def hand_hourly(kind: str = "cont") -> dict:
        rows = sql(percentile_sql.format(kind=kind), [start, organization_id, start, end])
        return {bucket_index(b, origin, 3600): (n, float(p[0]), float(p[1])) for b, n, p in rows}

    entry = measure_pair(figures, "30-day hourly p50/p99 latency", engine_hourly, hand_hourly, repeats, explain,
                         compare_fn=lambda e, h: compare({k: v[0] for k, v in e.items()},
                                                         {k: v[0] for k, v in h.items()}))
    # Percentiles: the engine interpolates as percentile_cont does, reading ranks off a ±1.5 % log
    # histogram; percentile_disc (the nearest-rank value) is printed for contrast.
    engine_answer, cont = entry.pop("answers")
    disc = hand_hourly("disc")
    for label, reference in (("percentile_cont", cont), ("percentile_disc", disc)):
        errors = [abs(engine_answer[k][i] - reference[k][i]) / reference[k][i]
                  for k in engine_answer if k in reference for i in (1, 2) if reference[k][i]]
        worst = max(errors, default=0.0)
        within = sum(e <= PERCENTILE_TOLERANCE for e in errors)
        entry[f"worst_vs_{label}"] = worst
        print(f"    p50/p99 vs {label}: worst relative error {worst:.2%}, median {statistics.median(errors):.2%}, "
              f"{within}/{len(errors)} within {PERCENTILE_TOLERANCE:.0%}")

    # 3. Top departments by cost over the last 30 days.
    q3 = UsageQuery(organization_id=organization_id, start=start, end=end, timezone=zone_name,
                    group_by=("department",))

    def engine_top() -> tuple[str, dict]:
        result = run(q3)
        ranked = sorted(result.rows, key=lambda row: (-row.cost, row.group["department"]))[:10]
        return result.level, {rank: (row.group["department"], row.cost, row.requests)
                              for rank, row in enumerate(ranked, 1)}

    def hand_top() -> dict:
        rows = sql(f"SELECT department_id, sum(cost) AS c, count(*) FROM usage_usageevent WHERE {where} "
                   "GROUP BY 1 ORDER BY c DESC, department_id LIMIT 10", [organization_id, start, end])
        return {rank: (d, c, n) for rank, (d, c, n) in enumerate(rows, 1)}

    measure_pair(figures, "30-day top 10 departments by cost", engine_top, hand_top, repeats, explain)

    # 4. 7-day 5-minute buckets (not on the 15-minute grid: answered from raw events).
    start = days_back(7)
    origin = int(start.timestamp())
    # The engine is asked for what the hand-written query computes, as a dialect would ask.
    q4 = UsageQuery(organization_id=organization_id, start=start, end=end, timezone=zone_name,
                    granularity=Granularity.of(300), sums=("prompt_tokens", "completion_tokens", "cost_units"),
                    latency_range=False)

    def engine_five() -> tuple[str, dict]:
        result = run(q4)
        return result.level, {row.bucket.key: (row.requests, row.prompt_tokens, row.completion_tokens, row.cost)
                              for row in result.rows if row.requests}

    def hand_five() -> dict:
        rows = sql(f"SELECT date_bin('5 minutes', \"timestamp\", %s), count(*), sum(prompt_tokens), "
                   f"sum(completion_tokens), sum(cost) FROM usage_usageevent WHERE {where} GROUP BY 1",
                   [start, organization_id, start, end])
        return {bucket_index(b, origin, 300): (n, int(p), int(c), cost) for b, n, p, c, cost in rows}

    entry = measure_pair(figures, "7-day 5-minute buckets", engine_five, hand_five, repeats, explain)
    if entry["differing"]:
        # Diagnosis, outside the timing: does the engine agree with the same query when the epoch is
        # rounded to the nearest second (what CAST(EXTRACT(EPOCH ...) AS BIGINT) does) instead of floored?
        rounded_sql = (f'SELECT (CAST(EXTRACT(EPOCH FROM "timestamp") AS BIGINT) - %s) / 300, count(*), '
                       f"sum(prompt_tokens), sum(completion_tokens), sum(cost) FROM usage_usageevent "
                       f"WHERE {where} GROUP BY 1")
        rounded = {b: (n, int(p), int(c), cost) for b, n, p, c, cost in
                   sql(rounded_sql, [origin, organization_id, start, end]) if 0 <= b < 7 * 288}
        moved = sql(f'SELECT count(*) FROM usage_usageevent WHERE {where} AND '
                    f'CAST(EXTRACT(EPOCH FROM "timestamp") AS BIGINT) %% 300 = 0 AND '
                    f'EXTRACT(EPOCH FROM "timestamp") %% 300 >= 299.5', [organization_id, start, end])[0][0]
        same, _, _ = compare(engine_five()[1], rounded)
        print(f"    diagnosis: {moved} events lie in the last half second of a 5-minute bucket; the engine's answer "
              f"{'equals' if same == 0 else 'does not equal'} a GROUP BY on the epoch rounded to the nearest second "
              f"(usage/query.py _raw_epoch: CAST of the numeric EXTRACT rounds, the rollups floor)")
        entry["diagnosis"] = f"{moved} events moved to the next bucket by rounding" if same == 0 else ""


def measure_pair(figures: Figures, label: str, engine: Callable[[], tuple[str, dict]], hand: Callable[[], dict],
                 repeats: int, explain: bool,
                 compare_fn: Callable[[dict, dict], tuple[int, int, str]] = compare) -> dict[str, Any]:
    engine_ms, (level, engine_answer) = timed(engine, repeats)
    hand_ms, hand_answer = timed(hand, repeats)
    differing, compared, example = compare_fn(engine_answer, hand_answer)
    entry = {"label": label, "level": level, "engine_ms": engine_ms, "hand_ms": hand_ms,
             "differing": differing, "compared": compared, "example": example,
             "rollup": not level.startswith("raw"), "answers": (engine_answer, hand_answer)}
    figures.queries.append(entry)
    print(f"  {label}: engine {engine_ms:,.1f} ms from {level}; hand-written over raw {hand_ms:,.1f} ms; "
          f"{hand_ms / engine_ms:,.1f}× ; {compared - differing}/{compared} groups equal")
    if example:
        print(f"    first difference: {example}")
    if explain:
        explain_queries(engine, hand)
    if label != "30-day hourly p50/p99 latency":
        entry.pop("answers")
    return entry


def explain_queries(*calls: Callable[[], Any]) -> None:
    """EXPLAIN (ANALYZE, BUFFERS) every statement the calls run (diagnostics, outside the timing)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    for call in calls:
        with CaptureQueriesContext(connection) as captured:
            call()
        for query in captured.captured_queries:
            if not query["sql"].lstrip().upper().startswith("SELECT"):
                continue
            plan = sql("EXPLAIN (ANALYZE, BUFFERS) " + query["sql"])
            print("      " + query["sql"][:300] + (" ..." if len(query["sql"]) > 300 else ""))
            for (line,) in plan:
                print("        " + line)


# --- phase 4: export depth ------------------------------------------------------------------------

def measure_export(organization_id: int, repeats: int, figures: Figures, explain: bool) -> None:
    from usage.selectors import export_events

    where = 'organization_id = %s AND "timestamp" >= %s AND "timestamp" < %s'
    total = sql(f"SELECT count(*) FROM usage_usageevent WHERE {where}", [organization_id, START, END])[0][0]
    # As deep as a million rows, or as deep as the organization goes while a full page still follows.
    depth = min(EXPORT_DEPTH, max(1, total - EXPORT_PAGE - 1))
    # The row at that depth and the one after it, located once with OFFSET, outside the timing.
    (moment, row_id), (_, next_id) = sql(
        f'SELECT "timestamp", id FROM usage_usageevent WHERE {where} ORDER BY "timestamp", id OFFSET %s LIMIT 2',
        [organization_id, START, END, depth - 1])

    def first() -> Any:
        return export_events(organization_id, START, END, limit=EXPORT_PAGE)

    def deep() -> Any:
        return export_events(organization_id, START, END, limit=EXPORT_PAGE, after=(moment, row_id))

    def by_offset() -> Any:
        return sql(f"SELECT * FROM usage_usageevent WHERE {where} ORDER BY \"timestamp\", id OFFSET %s LIMIT %s",
                   [organization_id, START, END, depth, EXPORT_PAGE])

    first_ms, first_page = timed(first, repeats)
    deep_ms, deep_page = timed(deep, repeats)
    offset_ms, _ = timed(by_offset, max(1, repeats // 2))
    correct = (len(first_page.events) == len(deep_page.events) == EXPORT_PAGE
               and deep_page.events[0].pk == next_id)
    figures.export = {"depth": depth, "first_ms": first_ms, "deep_ms": deep_ms, "offset_ms": offset_ms,
                      "correct": correct, "total": total}
    print(f"  export_events, {EXPORT_PAGE} rows a page over {total:,} events: first page {first_ms:,.1f} ms, "
          f"page after row {depth:,} {deep_ms:,.1f} ms ({deep_ms / first_ms:,.1f}×); "
          f"the same page by OFFSET {offset_ms:,.1f} ms; deep page starts at the right row: {correct}")
    if explain:
        explain_queries(first, deep)


# --- phase 5: sizes -------------------------------------------------------------------------------

def measure_sizes(figures: Figures) -> None:
    for table in ("usage_usageevent", *ROLLUP_TABLES):
        rows = sql(f"SELECT count(*) FROM {table}")[0][0]
        heap, indexes, total = sql("SELECT pg_relation_size(%s), pg_indexes_size(%s), pg_total_relation_size(%s)",
                                   [table, table, table])[0]
        figures.sizes.append((table, rows, heap, indexes, total))
    print(f"  {'table':<38} {'rows':>12} {'heap':>12} {'indexes':>12} {'total':>12}")
    for table, rows, heap, indexes, total in figures.sizes:
        print(f"  {table:<38} {rows:>12,} {mib(heap):>12} {mib(indexes):>12} {mib(total):>12}")
    for name, size in sql("SELECT indexrelname, pg_relation_size(indexrelid) FROM pg_stat_user_indexes "
                          "WHERE relname = 'usage_usageevent' ORDER BY 2 DESC"):
        print(f"    raw index {name:<44} {mib(size):>12}")


# --- the run --------------------------------------------------------------------------------------

def require_postgresql() -> None:
    import django

    django.setup()
    from django.db import connection

    if connection.vendor != "postgresql":
        raise SystemExit("This benchmark needs PostgreSQL: set DATABASE_URL=postgres://user@host:port/name "
                         f"(the configured database is {connection.vendor}).")
    from django.conf import settings

    # Production runs with DEBUG off; with it on, Django would keep and format every statement.
    settings.DEBUG = False


def describe_machine() -> None:
    from django.db import connection

    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    version = sql("SHOW server_version")[0][0]
    settings = dict(sql("SELECT name, current_setting(name) FROM pg_settings WHERE name IN ('shared_buffers', "
                        "'work_mem', 'max_parallel_workers_per_gather', 'synchronous_commit', 'jit')"))
    print(f"machine: {os.cpu_count()} cores, {memory / 2**30:.1f} GiB RAM, {platform.platform()}; "
          f"Python {platform.python_version()}; PostgreSQL {version} ({connection.settings_dict['NAME']}); "
          + ", ".join(f"{k}={v}" for k, v in sorted(settings.items())))


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def summary(figures: Figures) -> None:
    lines = ["| Figure | Measured | Target | |", "|---|---|---|---|"]

    def add(name: str, measured: str, target: str, ok: bool | None) -> None:
        lines.append(f"| {name} | {measured} | {target} | {'' if ok is None else verdict(ok)} |")

    if figures.ingest_seconds:
        ingest_rate = figures.events / figures.ingest_seconds
        add("ingest_events, every rollup level maintained", f"{ingest_rate:,.0f} events/s", "", None)
        if figures.copy_seconds:
            copy_rate = figures.copy_rows / figures.copy_seconds
            add(f"plain COPY into a bare table ({figures.copy_rows:,} rows)", f"{copy_rate:,.0f} rows/s", "", None)
            ratio = ingest_rate / copy_rate
            add("ingestion / COPY", f"{ratio:.1%}", f"≥ {INGEST_VS_COPY_MIN:.0%}", ratio >= INGEST_VS_COPY_MIN)
            if figures.indexed_copy_seconds:
                indexed_rate = figures.copy_rows / figures.indexed_copy_seconds
                add("COPY into a table with the raw table's indexes (the floor, no rollups)",
                    f"{indexed_rate:,.0f} rows/s = {indexed_rate / copy_rate:.1%} of bare COPY", "", None)
            if figures.ingest_insert_seconds:
                add("ingest_events: store and fold alone (staging COPY + insert + queue + every level)",
                    f"{figures.events / figures.ingest_insert_seconds:,.0f} events/s", "", None)
    for q in figures.queries:
        ratio = q["hand_ms"] / q["engine_ms"]
        name = f"{q['label']} ({q['level']})"
        add(f"{name}: engine", f"{q['engine_ms']:,.1f} ms",
            f"< {ROLLUP_QUERY_MAX_MS:.0f} ms" if q["rollup"] else "", q["engine_ms"] < ROLLUP_QUERY_MAX_MS
            if q["rollup"] else None)
        add(f"{q['label']}: hand-written SQL over raw", f"{q['hand_ms']:,.1f} ms", "", None)
        if q["rollup"]:
            add(f"{q['label']}: speed-up", f"{ratio:,.1f}×", f"≥ {ROLLUP_SPEEDUP_MIN:.0f}×",
                ratio >= ROLLUP_SPEEDUP_MIN)
        else:
            slower = q["engine_ms"] / q["hand_ms"]
            add(f"{q['label']}: engine / hand-written", f"{slower:,.2f}×", f"≤ {RAW_QUERY_RATIO_MAX}×",
                slower <= RAW_QUERY_RATIO_MAX)
        add(f"{q['label']}: answers equal", f"{q['compared'] - q['differing']}/{q['compared']} groups",
            "all equal", q["differing"] == 0)
        for reference in ("percentile_cont", "percentile_disc"):
            if f"worst_vs_{reference}" in q:
                worst = q[f"worst_vs_{reference}"]
                # The target is against the hand-written query (percentile_cont); disc is a contrast.
                target = reference == "percentile_cont"
                add(f"{q['label']}: worst p50/p99 error vs {reference}", f"{worst:.2%}",
                    f"≤ {PERCENTILE_TOLERANCE:.0%}" if target else "",
                    worst <= PERCENTILE_TOLERANCE if target else None)
    if figures.export:
        e = figures.export
        ratio = e["deep_ms"] / e["first_ms"]
        add(f"export_events page 1 ({EXPORT_PAGE} rows)", f"{e['first_ms']:,.1f} ms", "", None)
        add(f"export_events page after row {e['depth']:,}", f"{e['deep_ms']:,.1f} ms ({ratio:,.1f}× page 1)",
            f"≤ {EXPORT_DEPTH_RATIO_MAX}× page 1", ratio <= EXPORT_DEPTH_RATIO_MAX and e["correct"])
        add("the same page by OFFSET (for contrast)", f"{e['offset_ms']:,.1f} ms", "", None)
    if figures.sizes:
        raw = figures.sizes[0]
        rollup_total = sum(s[4] for s in figures.sizes[1:])
        for table, rows, heap, indexes, total in figures.sizes:
            add(f"size {table} ({rows:,} rows)", f"heap {mib(heap)} + indexes {mib(indexes)} = {mib(total)}", "",
                None)
        add("all rollups / raw (total size)", f"{mib(rollup_total)} / {mib(raw[4])} = {rollup_total / raw[4]:.1%}",
            "", None)
    print("\nSUMMARY")
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=10_000_000, help="events to generate (default 10,000,000)")
    parser.add_argument("--keep-db", action="store_true", help="keep the benchmark database afterwards")
    parser.add_argument("--reuse-db", action="store_true",
                        help="skip building and loading: measure the database an earlier --keep-db run left")
    parser.add_argument("--copy-rows", type=int, default=None,
                        help="COPY only this many rows for the baseline (default: all of them)")
    parser.add_argument("--repeats", type=int, default=7, help="timed runs per query (median reported)")
    parser.add_argument("--explain", action="store_true", help="print EXPLAIN ANALYZE of every measured query")
    args = parser.parse_args()
    require_postgresql()
    print(f"$ python -m bench.usage_engine {' '.join(sys.argv[1:])}")
    print(f"started {datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC")
    figures = Figures()
    if args.reuse_db:
        with kept_database():
            measure(args, figures)
    else:
        with throwaway_database():
            from django.db import connection

            if args.keep_db:
                # destroy_test_db(keepdb=True) only restores the settings; the data stays for inspection.
                connection.creation.destroy_test_db = functools.partial(connection.creation.destroy_test_db,
                                                                        keepdb=True)
            describe_machine()
            started = time.perf_counter()
            world = build_world()
            print(f"world built in {time.perf_counter() - started:,.1f} s: {len(world.org_ids)} organizations, "
                  f"{DEPARTMENTS} departments, {len(world.key_uuids):,} keys, {len(world.model_codes)} models; "
                  f"events from {START:%Y-%m-%d} to {END:%Y-%m-%d} UTC")
            ingest(world, args.events, figures)
            check_rollups(args.events)
            measure(args, figures)
            if args.keep_db:
                print(f"keeping database {connection.settings_dict['NAME']} (--reuse-db measures it again)")
    summary(figures)
    print(f"finished {datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC")


@contextlib.contextmanager
def kept_database() -> Iterator[None]:
    """Point the connection at the database a --keep-db run left, without creating or dropping it."""
    from django.db import connection

    name = f"bench_{connection.settings_dict['NAME']}"
    connection.close()
    connection.settings_dict["NAME"] = name
    describe_machine()
    if not sql("SELECT to_regclass('usage_usageevent')")[0][0]:
        raise SystemExit(f"database {name} holds no usage events: run with --keep-db first")
    try:
        yield
    finally:
        connection.close()


def measure(args: argparse.Namespace, figures: Figures) -> None:
    copy_baseline(args.copy_rows, figures)
    started = time.perf_counter()
    sql("VACUUM ANALYZE")
    print(f"VACUUM ANALYZE: {time.perf_counter() - started:,.1f} s")
    # The best covering index for the hand-written queries: every column they read, in the
    # (organization, time) order they filter by, so they run as index-only scans.
    started = time.perf_counter()
    sql("SET maintenance_work_mem = '1GB'")
    sql(f'CREATE INDEX IF NOT EXISTS {COVERING_INDEX} ON usage_usageevent (organization_id, "timestamp") '
        "INCLUDE (model_id, department_id, cost, latency_ms, prompt_tokens, completion_tokens, status_code)")
    sql("RESET maintenance_work_mem")
    sql("ANALYZE usage_usageevent")
    print(f"covering index for the hand-written queries built in {time.perf_counter() - started:,.1f} s")
    organization_id, events, zone_name = sql(
        "SELECT s.organization_id, s.events, o.timezone FROM usage_usagefillstate s "
        "JOIN portal_organization o ON o.id = s.organization_id ORDER BY s.events DESC LIMIT 1")[0]
    total = sql("SELECT sum(events) FROM usage_usagefillstate")[0][0]
    figures.events = figures.events or int(total)
    print(f"heaviest organization: id {organization_id} ({zone_name}), {events:,} events = {events / total:.1%} "
          f"of {int(total):,}; each time is the median of {args.repeats} runs after a warm-up")
    run_queries(organization_id, zone_name, args.repeats, figures, args.explain)
    measure_export(organization_id, args.repeats, figures, args.explain)
    measure_sizes(figures)


if __name__ == "__main__":
    main()
