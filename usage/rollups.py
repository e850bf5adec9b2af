"""Rollup maintenance: fold newly stored events into every rollup level, in the same
transaction as the events, with one additive `INSERT ... ON CONFLICT DO UPDATE` per level.

Only rows that were really inserted are folded in (what RETURNING gave back), so a replayed
batch adds nothing. Keys are sorted before writing so that concurrent batches take row locks in
the same order and cannot deadlock each other.

Two ways in, checked against each other by tests/usage/test_rollup_properties.py: on PostgreSQL
ingestion stores and folds a batch in one SQL statement (store_and_fold); SQLite ingestion and
every rebuild aggregate in Python (fold_events).
"""

import functools
import operator
import zlib
import zoneinfo
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from django.db import connection

from billing.money import to_units
from portal.models import Organization
from usage import histogram
from usage.bulk import column_types, write_rows
from usage.models import (
    BUCKET_SECONDS,
    HOUR_SECONDS,
    UsageDaily,
    UsageDepartmentDaily,
    UsageFillState,
    UsageFine15,
    UsageHourly,
    UsageModelDaily,
)

COUNT_COLUMNS = ("requests", "errors", "prompt_tokens", "completion_tokens", "cached_tokens", "image_count",
                 "video_seconds", "input_chars", "output_chars", "cost_units", "latency_sum_ms", "input_cost_units",
                 "cache_read_cost_units", "output_cost_units")
MIN_COLUMNS = ("latency_min_ms",)
MAX_COLUMNS = ("latency_max_ms",)
BINS_COLUMNS = ("latency_bins",)  # at most one, written last


# Each rollup column as an aggregate over raw event columns: the raw level of the query engine
# reads these, and on PostgreSQL ingestion folds new events into every level with them.
_EVENT_AGGREGATES = {
    "requests": "COUNT(*)",
    "errors": "SUM(CASE WHEN status_code >= 400 THEN 1 ELSE 0 END)",
    "prompt_tokens": "SUM(prompt_tokens)",
    "completion_tokens": "SUM(completion_tokens)",
    "cached_tokens": "SUM(cached_tokens)",
    "image_count": "SUM(image_count)",
    "video_seconds": "SUM(video_seconds)",
    "input_chars": "SUM(input_chars)",
    "output_chars": "SUM(output_chars)",
    "latency_sum_ms": "SUM(latency_ms)",
    "latency_min_ms": "MIN(latency_ms)",
    "latency_max_ms": "MAX(latency_ms)",
}
_COST_COLUMNS = {"cost_units": "cost", "input_cost_units": "input_cost", "cache_read_cost_units": "cache_read_cost",
                 "output_cost_units": "output_cost"}
# Each key column of a level as an expression over raw event columns (plus the staging table's
# precomputed bucket, hour and day).
_EVENT_KEYS = {"member_id_or_zero": "COALESCE(member_id, 0)", "status_class": "(status_code / 100)"}


def aggregate_over_events(column: str) -> str:
    """SQL aggregating raw events into a rollup column (cost columns in whole 1e-8 units)."""
    if column in _COST_COLUMNS:
        amount = _COST_COLUMNS[column]
        if connection.vendor == "postgresql":
            return f"CAST(SUM({amount}) * 100000000 AS BIGINT)"
        # SQLite keeps decimals as binary floats: round each event back to whole 1e-8 units first.
        return f"SUM(CAST(ROUND({amount} * 100000000) AS INTEGER))"
    return _EVENT_AGGREGATES[column]


def local_hour_of(epoch: int, utc_offset: int) -> int:
    """The first UTC epoch second of the local hour (at that UTC offset) that contains `epoch`."""
    return epoch - (epoch + utc_offset) % HOUR_SECONDS


def status_class(status_code: int) -> int:
    return status_code // 100


class _Sums:
    __slots__ = ("values", "latency_min", "latency_max", "bins")

    def __init__(self) -> None:
        self.values: list[int] = [0] * len(COUNT_COLUMNS)
        self.latency_min: int | None = None
        self.latency_max = 0
        self.bins: dict[int, int] | None = None

    def add(self, values: Sequence[int], latency: int) -> None:
        self.values = list(map(int.__add__, self.values, values))
        if self.latency_min is None or latency < self.latency_min:
            self.latency_min = latency
        if latency > self.latency_max:
            self.latency_max = latency

    def add_bin(self, bin_index: int) -> None:
        if self.bins is None:
            self.bins = defaultdict(int)
        self.bins[bin_index] += 1

    def row(self) -> list[Any]:
        return [*self.values, self.latency_min or 0, self.latency_max]

    def row_with_bins(self) -> list[Any]:
        return [*self.row(), histogram.dense(self.bins or {})]


@dataclass
class _Level:
    model: Any
    key_columns: tuple[str, ...]
    metric_columns: tuple[str, ...] = COUNT_COLUMNS
    min_columns: tuple[str, ...] = MIN_COLUMNS
    max_columns: tuple[str, ...] = MAX_COLUMNS
    bins_columns: tuple[str, ...] = ()


FINE = _Level(UsageFine15, ("organization_id", "bucket", "department_id", "key_id", "model_id", "member_id_or_zero",
                            "status_class", "currency"))
HOURLY = _Level(UsageHourly, ("organization_id", "hour", "currency"), bins_columns=BINS_COLUMNS)
DAILY = _Level(UsageDaily, ("organization_id", "day", "department_id", "model_id", "currency"))
DEPARTMENT_DAILY = _Level(UsageDepartmentDaily, ("organization_id", "day", "department_id", "currency"))
MODEL_DAILY = _Level(UsageModelDaily, ("organization_id", "day", "model_id", "currency"))
LEVELS = (FINE, HOURLY, DAILY, DEPARTMENT_DAILY, MODEL_DAILY)


def _conflict_clause(level: _Level) -> str:
    """ON CONFLICT (key) DO UPDATE: add the sums, keep the smaller minimum and the larger maximum."""
    quote = connection.ops.quote_name
    table = quote(level.model._meta.db_table)
    least, greatest = ("MIN", "MAX") if connection.vendor == "sqlite" else ("LEAST", "GREATEST")
    updates = [f"{quote(c)} = {table}.{quote(c)} + EXCLUDED.{quote(c)}" for c in level.metric_columns]
    updates += [f"{quote(c)} = {least}({table}.{quote(c)}, EXCLUDED.{quote(c)})" for c in level.min_columns]
    updates += [f"{quote(c)} = {greatest}({table}.{quote(c)}, EXCLUDED.{quote(c)})" for c in level.max_columns]
    updates += [f"{quote(c)} = usage_bins_add({table}.{quote(c)}, EXCLUDED.{quote(c)})" for c in level.bins_columns]
    return f"({', '.join(quote(c) for c in level.key_columns)}) DO UPDATE SET " + ", ".join(updates)


def _upsert(level: _Level, rows: Sequence[Sequence[Any]]) -> None:
    if not rows:
        return
    columns = [*level.key_columns, *level.metric_columns, *level.min_columns, *level.max_columns,
               *level.bins_columns]
    conflict = _conflict_clause(level)
    if level.bins_columns and connection.vendor == "sqlite":
        bins_field = level.model._meta.get_field(level.bins_columns[0])  # always the last column
        rows = [[*row[:-1], bins_field.get_db_prep_value(row[-1], connection)] for row in rows]
    write_rows(level.model._meta.db_table, columns, column_types(level.model, columns), rows, conflict=conflict)


def _sorted_rows(groups: dict[tuple, _Sums], render) -> list[list[Any]]:
    return [[*key, *render(value)] for key, value in sorted(groups.items(), key=lambda item: item[0])]


def fold_events(events: Iterable[Any], zones: dict[int, zoneinfo.ZoneInfo] | None = None, *,
                freshness: bool = True) -> None:
    """Add `events` (stored, rated UsageEvent rows) into every rollup level and, unless told not to
    (a partial rebuild refolds events already counted), the fill state. SQLite ingestion and every
    rebuild come through here; PostgreSQL ingestion folds in SQL (store_and_fold)."""
    events = list(events)
    if not events:
        return
    if zones is None:
        zones = organization_zones({e.organization_id for e in events})
    levels: dict[str, dict[tuple, _Sums]] = {name: defaultdict(_Sums) for name in
                                              ("fine", "hourly", "daily", "department", "model")}
    fine, hourly, daily = levels["fine"], levels["hourly"], levels["daily"]
    department_daily, model_daily = levels["department"], levels["model"]
    fresh: dict[int, list] = {}
    sqlite = connection.vendor == "sqlite"
    for e in events:
        org, dept, model, currency, latency = e.organization_id, e.department_id, e.model_id, e.currency, e.latency_ms
        values = (1, 1 if e.status_code >= 400 else 0, e.prompt_tokens, e.completion_tokens, e.cached_tokens,
                  e.image_count, e.video_seconds, e.input_chars, e.output_chars, to_units(e.cost), latency,
                  to_units(e.input_cost), to_units(e.cache_read_cost), to_units(e.output_cost))
        epoch = int(e.timestamp.timestamp())
        local = e.timestamp.astimezone(zones[org])
        day = local.date()
        if sqlite:
            day = connection.ops.adapt_datefield_value(day)
        fine[(org, epoch - epoch % BUCKET_SECONDS, dept, e.key_id, model, e.member_id or 0,
              status_class(e.status_code), currency)].add(values, latency)
        hour = hourly[(org, local_hour_of(epoch, int(local.utcoffset().total_seconds())), currency)]
        hour.add(values, latency)
        hour.add_bin(histogram.bin_of(latency))
        daily[(org, day, dept, model, currency)].add(values, latency)
        department_daily[(org, day, dept, currency)].add(values, latency)
        model_daily[(org, day, model, currency)].add(values, latency)
        state = fresh.setdefault(org, [e.timestamp, 0])
        state[0] = max(state[0], e.timestamp)
        state[1] += 1
    for level, groups in ((FINE, fine), (HOURLY, hourly), (DAILY, daily), (DEPARTMENT_DAILY, department_daily),
                          (MODEL_DAILY, model_daily)):
        _upsert(level, _sorted_rows(groups, _Sums.row_with_bins if level.bins_columns else _Sums.row))
    if freshness:
        _upsert_freshness(fresh)


# --- PostgreSQL: insert and fold in one statement ---------------------------------------------

# Session-local, so a pooled server session can outlive a deploy that changes its columns: the
# name carries its shape (_staging_table), and an old-shaped table is simply never used again.
STAGING_TABLE = "usage_ingest_staging"
# What the staging table holds besides the event's own columns: its 15-minute bucket, the first
# second of its hour and its day on the organization's clock (worked out with Python's zoneinfo,
# as the query engine does, so both sides agree on every zone), and its latency histogram bin.
_STAGING_EXTRA = (("bucket", "bigint"), ("hour", "bigint"), ("day", "date"), ("bin", "integer"))


@functools.cache
def _event_columns() -> tuple[str, ...]:
    from usage.models import UsageEvent

    return tuple(field.column for field in UsageEvent._meta.concrete_fields if not field.primary_key)


@functools.cache
def _staging_table() -> str:
    shape = ",".join([*_event_columns(), *(f"{name} {kind}" for name, kind in _STAGING_EXTRA)])
    return f"{STAGING_TABLE}_{zlib.crc32(shape.encode()):08x}"


@functools.cache  # PostgreSQL only, so the text never changes within a process
def _fold_statement() -> str:
    """One statement: insert the staged events whose request_id is new, add exactly those into
    the sums and histograms of every level and the fill state, and return their (id, request_id)."""
    quote = connection.ops.quote_name
    columns = ", ".join(quote(c) for c in _event_columns())
    staging = _staging_table()
    parts = [f"ins AS (INSERT INTO usage_usageevent ({columns}) SELECT {columns} FROM {staging} "
             "ON CONFLICT (request_id) DO NOTHING RETURNING id, request_id)",
             f"new AS (SELECT s.* FROM {staging} s JOIN ins USING (request_id))"]
    for number, level in enumerate(LEVELS):
        metrics = (*level.metric_columns, *level.min_columns, *level.max_columns)
        keys = ", ".join(quote(c) for c in level.key_columns)
        positions = ", ".join(str(position) for position in range(1, len(level.key_columns) + 1))
        key_selects = [f"{_EVENT_KEYS.get(c, c)} AS {quote(c)}" for c in level.key_columns]
        # GROUP BY makes each key appear once (ON CONFLICT may touch a row only once per
        # statement); ORDER BY takes row locks in key order, so concurrent batches cannot deadlock.
        aggregates = [f"{aggregate_over_events(c)} AS {quote(c)}" for c in metrics]
        source = (f"SELECT {', '.join(key_selects + aggregates)} "
                  f"FROM new GROUP BY {positions}")
        if level.bins_columns:
            # The batch's histogram of each key: counts per bin, made dense, beside the sums.
            metrics += level.bins_columns
            source = (f"SELECT * FROM ({source}) AS sums JOIN (SELECT {keys}, usage_bins_dense(array_agg(bin), "
                      f"array_agg(n)) FROM (SELECT {', '.join(key_selects)}, bin, CAST(COUNT(*) AS integer) AS n "
                      f"FROM new GROUP BY {positions}, bin) AS per_bin GROUP BY {positions}) AS bins USING ({keys})")
        parts.append(f"level{number} AS (INSERT INTO {quote(level.model._meta.db_table)} "
                     f"({', '.join(quote(c) for c in (*level.key_columns, *metrics))}) "
                     f"SELECT * FROM ({source}) AS batch ORDER BY {positions} "
                     f"ON CONFLICT {_conflict_clause(level)})")
    parts.append('fill AS (INSERT INTO usage_usagefillstate (organization_id, newest_event_at, events) '
                 'SELECT organization_id, MAX("timestamp"), COUNT(*) FROM new GROUP BY 1 ORDER BY 1 '
                 "ON CONFLICT (organization_id) DO UPDATE SET newest_event_at = GREATEST("
                 "usage_usagefillstate.newest_event_at, EXCLUDED.newest_event_at), "
                 "events = usage_usagefillstate.events + EXCLUDED.events)")
    return "WITH " + ",\n".join(parts) + "\nSELECT id, request_id FROM ins"


def store_and_fold(rows: Sequence[Any], zones: dict[int, zoneinfo.ZoneInfo]) -> list[Any]:
    """PostgreSQL ingestion of rated events (usage.services.RatedEvent): COPY them into a
    session-local staging table, then one statement stores the new ones and folds them into every
    level. Returns the rows that were new, with their ids set. Must run inside the ingest
    transaction."""
    if not rows:
        return []
    columns = _event_columns()
    values_of = operator.attrgetter(*_attnames(columns))
    bin_of = histogram.bin_of
    staging = _staging_table()
    with connection.cursor() as cursor:
        cursor.execute(
            f"CREATE TEMP TABLE IF NOT EXISTS {staging} ON COMMIT DELETE ROWS AS SELECT "
            + ", ".join(connection.ops.quote_name(c) for c in columns) + ", "
            + ", ".join(f"NULL::{kind} AS {name}" for name, kind in _STAGING_EXTRA)
            + " FROM usage_usageevent WITH NO DATA")
        # COPY's rows are encoded in C; the same arrays through unnest() were dumped in Python.
        with cursor.cursor.copy(f"COPY {staging} FROM STDIN") as copy:
            for row in rows:
                moment = row.timestamp
                epoch = int(moment.timestamp())
                local = moment.astimezone(zones[row.organization_id])
                copy.write_row((*values_of(row), epoch - epoch % BUCKET_SECONDS,
                                local_hour_of(epoch, int(local.utcoffset().total_seconds())), local.date(),
                                bin_of(row.latency_ms)))
        cursor.execute(_fold_statement())
        returned = cursor.fetchall()
        # Inside a longer transaction the staging rows would outlive this batch; ON COMMIT
        # DELETE ROWS clears them otherwise.
        cursor.execute(f"DELETE FROM {staging}")
    by_request_id = {row.request_id: row for row in rows}
    inserted = []
    for row_id, request_id in returned:
        row = by_request_id[request_id]
        row.pk = row_id
        inserted.append(row)
    return inserted


def _attnames(columns: Sequence[str]) -> list[str]:
    from usage.models import UsageEvent

    by_column = {field.column: field.attname for field in UsageEvent._meta.concrete_fields}
    return [by_column[column] for column in columns]


def _upsert_freshness(freshness: dict[int, list]) -> None:
    quote = connection.ops.quote_name
    table = quote(UsageFillState._meta.db_table)
    greatest = "MAX" if connection.vendor == "sqlite" else "GREATEST"
    rows = sorted(freshness.items())
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (organization_id, newest_event_at, events) VALUES "
            + ", ".join(["(%s, %s, %s)"] * len(rows))
            + f" ON CONFLICT (organization_id) DO UPDATE SET newest_event_at = {greatest}({table}.newest_event_at, "
            f"EXCLUDED.newest_event_at), events = {table}.events + EXCLUDED.events",
            [value for org, (newest, count) in rows
             for value in (org, connection.ops.adapt_datetimefield_value(newest), count)],
        )


def organization_zones(organization_ids: Iterable[int]) -> dict[int, zoneinfo.ZoneInfo]:
    return {pk: zoneinfo.ZoneInfo(tz) for pk, tz in
            Organization.objects.filter(pk__in=set(organization_ids)).values_list("pk", "timezone")}

