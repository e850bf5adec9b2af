"""Rollup maintenance: fold newly stored events into every rollup level, in the same
transaction as the events, with one additive `INSERT ... ON CONFLICT DO UPDATE` per level.

Only rows that were really inserted are folded in (ingestion passes what RETURNING gave back),
so a replayed batch adds nothing. Keys are sorted before writing so that concurrent batches
take row locks in the same order and cannot deadlock each other.
"""

import zoneinfo
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django.db import connection

from billing.money import to_units
from portal.models import Organization
from usage.bulk import column_types, write_rows
from usage.histogram import bin_of
from usage.models import (
    BUCKET_SECONDS,
    DepartmentLatencyHistogram15,
    LatencyHistogram15,
    UsageDaily,
    UsageFillState,
    UsageFine15,
    UsageModel15,
)

COUNT_COLUMNS = ("requests", "errors", "prompt_tokens", "completion_tokens", "cached_tokens", "image_count",
                 "video_seconds", "input_chars", "output_chars", "cost_units", "latency_sum_ms", "input_cost_units",
                 "cache_read_cost_units", "output_cost_units")
MIN_COLUMNS = ("latency_min_ms",)
MAX_COLUMNS = ("latency_max_ms",)


def bucket_of(moment: datetime) -> int:
    epoch = int(moment.timestamp())
    return epoch - epoch % BUCKET_SECONDS


def status_class(status_code: int) -> int:
    return status_code // 100


class _Sums:
    __slots__ = ("values", "latency_min", "latency_max")

    def __init__(self) -> None:
        self.values: list[int] = [0] * len(COUNT_COLUMNS)
        self.latency_min: int | None = None
        self.latency_max = 0

    def add(self, event: Any) -> None:
        v = self.values
        v[0] += 1
        v[1] += 1 if event.status_code >= 400 else 0
        v[2] += event.prompt_tokens
        v[3] += event.completion_tokens
        v[4] += event.cached_tokens
        v[5] += event.image_count
        v[6] += event.video_seconds
        v[7] += event.input_chars
        v[8] += event.output_chars
        v[9] += to_units(event.cost)
        v[10] += event.latency_ms
        v[11] += to_units(event.input_cost)
        v[12] += to_units(event.cache_read_cost)
        v[13] += to_units(event.output_cost)
        latency = event.latency_ms
        self.latency_min = latency if self.latency_min is None else min(self.latency_min, latency)
        self.latency_max = max(self.latency_max, latency)

    def row(self) -> list[Any]:
        return [*self.values, self.latency_min or 0, self.latency_max]


@dataclass
class _Level:
    model: Any
    key_columns: tuple[str, ...]
    metric_columns: tuple[str, ...]
    min_columns: tuple[str, ...] = ()
    max_columns: tuple[str, ...] = ()


FINE = _Level(UsageFine15, ("organization_id", "bucket", "department_id", "key_id", "model_id", "member_id_or_zero",
                            "status_class", "currency"), COUNT_COLUMNS, MIN_COLUMNS, MAX_COLUMNS)
MODEL15 = _Level(UsageModel15, ("organization_id", "bucket", "department_id", "model_id", "currency"),
                 COUNT_COLUMNS, MIN_COLUMNS, MAX_COLUMNS)
DAILY = _Level(UsageDaily, ("organization_id", "day", "department_id", "model_id", "currency"),
               COUNT_COLUMNS, MIN_COLUMNS, MAX_COLUMNS)
HIST = _Level(LatencyHistogram15, ("organization_id", "bucket", "bin"), ("count",))
DEPT_HIST = _Level(DepartmentLatencyHistogram15, ("organization_id", "department_id", "bucket", "bin"), ("count",))


def _upsert(level: _Level, rows: Sequence[Sequence[Any]]) -> None:
    if not rows:
        return
    quote = connection.ops.quote_name
    table = quote(level.model._meta.db_table)
    columns = [*level.key_columns, *level.metric_columns, *level.min_columns, *level.max_columns]
    least, greatest = ("MIN", "MAX") if connection.vendor == "sqlite" else ("LEAST", "GREATEST")
    updates = [f"{quote(c)} = {table}.{quote(c)} + EXCLUDED.{quote(c)}" for c in level.metric_columns]
    updates += [f"{quote(c)} = {least}({table}.{quote(c)}, EXCLUDED.{quote(c)})" for c in level.min_columns]
    updates += [f"{quote(c)} = {greatest}({table}.{quote(c)}, EXCLUDED.{quote(c)})" for c in level.max_columns]
    conflict = f"({', '.join(quote(c) for c in level.key_columns)}) DO UPDATE SET " + ", ".join(updates)
    write_rows(level.model._meta.db_table, columns, column_types(level.model, columns), rows, conflict=conflict)


def _sorted_rows(groups: dict[tuple, Any], render) -> list[list[Any]]:
    return [[*key, *render(value)] for key, value in sorted(groups.items(), key=lambda item: item[0])]


def fold_events(events: Iterable[Any], zones: dict[int, zoneinfo.ZoneInfo] | None = None, *,
                freshness: bool = True) -> None:
    """Add `events` (stored, rated UsageEvent rows) into every rollup level and, unless told not to
    (a partial rebuild refolds events already counted), the fill state."""
    events = list(events)
    if not events:
        return
    if zones is None:
        zones = organization_zones({e.organization_id for e in events})
    fine: dict[tuple, _Sums] = defaultdict(_Sums)
    model15: dict[tuple, _Sums] = defaultdict(_Sums)
    daily: dict[tuple, _Sums] = defaultdict(_Sums)
    hist: dict[tuple, int] = defaultdict(int)
    dept_hist: dict[tuple, int] = defaultdict(int)
    fresh: dict[int, list] = {}
    for e in events:
        bucket = bucket_of(e.timestamp)
        org, dept = e.organization_id, e.department_id
        fine[(org, bucket, dept, e.key_id, e.model_id, e.member_id or 0, status_class(e.status_code),
              e.currency)].add(e)
        model15[(org, bucket, dept, e.model_id, e.currency)].add(e)
        day = e.timestamp.astimezone(zones[org]).date()
        if connection.vendor == "sqlite":
            day = connection.ops.adapt_datefield_value(day)
        daily[(org, day, dept, e.model_id, e.currency)].add(e)
        latency_bin = bin_of(e.latency_ms)
        hist[(org, bucket, latency_bin)] += 1
        dept_hist[(org, dept, bucket, latency_bin)] += 1
        state = fresh.setdefault(org, [e.timestamp, 0])
        state[0] = max(state[0], e.timestamp)
        state[1] += 1
    _upsert(FINE, _sorted_rows(fine, _Sums.row))
    _upsert(MODEL15, _sorted_rows(model15, _Sums.row))
    _upsert(DAILY, _sorted_rows(daily, _Sums.row))
    _upsert(HIST, _sorted_rows(hist, lambda count: [count]))
    _upsert(DEPT_HIST, _sorted_rows(dept_hist, lambda count: [count]))
    if freshness:
        _upsert_freshness(fresh)


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


def epoch_to_datetime(epoch: int) -> datetime:
    return datetime.fromtimestamp(epoch, tz=UTC)
