"""THE query engine: every usage number the product shows comes from `run(UsageQuery)`.

A query names an organization, a half-open range [start, end), a zone, a granularity, what to
group by, which metrics, and filters. The engine picks the smallest stored level that answers it
exactly (per local day by model, by department or by both; per local hour, with the latency
histograms; the 15-minute fine level) or else the raw events, builds one SQL statement that
needs only integer arithmetic on UTC epoch seconds (so SQLite and PostgreSQL agree; raw
fixed-width buckets use date_bin on PostgreSQL), and returns typed rows with every empty bucket
filled. Dialects parse requests into a UsageQuery and render the rows; nothing else in
the code base aggregates usage.

What the levels are, what they keep and what each measure is, in SQL and on a Row, come from the
registries (usage/levels.py, usage/measures.py); this module only decides and assembles.
"""

import json
import math
import zoneinfo
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, make_dataclass, replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.db import connection
from django.db.models import Max, Min

from billing.models import Model
from billing.money import from_units, round_event_amount
from portal.models import Organization
from usage import activity, histogram, levels
from usage.db import psycopg_cursor
from usage.levels import DIMENSION_NAMED, DIMENSIONS, LEVEL_NAMED, Level, TimeKind
from usage.measures import EVENT_VALUE_NAMED, EVENT_VALUES, ROW_MEASURES, SUMMED, Measure, Merge
from usage.models import UsageDaily, UsageHourGroups, UsageKeyDailyRows
from usage.rollups import aggregate_over_events
from usage.timebuckets import (
    DAY,
    Bucket,
    Granularity,
    bucket_day,
    buckets,
    day_from_number,
    epoch,
    local_midnight,
    local_midnight_of,
    offset_transitions,
)

# The names of the engine's API, from the registries (usage/measures.py, usage/levels.py).
GROUPS = tuple(dimension.name for dimension in DIMENSIONS)
SUM_FIELDS = tuple(measure.name for measure in SUMMED)
RAW, FINE, HOURLY, DAILY = levels.RAW.name, levels.FINE.name, levels.HOURLY.name, levels.DAILY.name
DEPARTMENT_DAILY, MODEL_DAILY = levels.DEPARTMENT_DAILY.name, levels.MODEL_DAILY.name
KEY_DAILY, ORGANIZATION_DAILY = levels.KEY_DAILY.name, levels.ORGANIZATION_DAILY.name
MODEL_HOURLY, DEPARTMENT_KEY_DAILY = levels.MODEL_HOURLY.name, levels.DEPARTMENT_KEY_DAILY.name
# The smallest and the largest latency, which a query may leave out (latency_range=False).
_LATENCY_RANGE: tuple[Measure, ...] = tuple(measure for measure in ROW_MEASURES
                                            if measure.merge in (Merge.MIN, Merge.MAX))
# The levels keeping latency histograms, coarsest first (usage/levels.py).
_HISTOGRAM_LEVELS: tuple[Level, ...] = tuple(level for level in reversed(levels.ROLLUPS) if level.histograms)
# Per-event values a distribution or a count of non-zero events can be asked of, as SQL over
# usage_usageevent (usage/measures.py).
VALUES = {value.name: value.event_sql for value in EVENT_VALUES}
COST_VALUES = {value.name for value in EVENT_VALUES if value.money}


@dataclass
class Distribution:
    min: Decimal | int | None = None
    max: Decimal | int | None = None
    percentiles: dict[float, Decimal | float | None] = field(default_factory=dict)


@dataclass(frozen=True)
class UsageQuery:
    organization_id: int
    start: datetime
    end: datetime
    timezone: str
    granularity: Granularity | None = None  # None: one bucket for the whole range
    group_by: tuple[str, ...] = ()
    percentiles: tuple[float, ...] = ()  # latency percentiles, 0-100
    # Distinct conversations: from their per-day counts where those are exact (usage/activity.py),
    # else from raw events.
    conversations: bool = False
    departments: tuple[int, ...] = ()
    keys: tuple[int, ...] = ()
    models: tuple[int, ...] = ()
    model_types: tuple[str, ...] = ()
    members: tuple[int, ...] = ()
    # Tracing attributes, answered from raw events: {"op_names": (...), "trace_ids": (...), ...}
    trace: tuple[tuple[str, tuple[str, ...]], ...] = ()
    trace_roots_only: bool = False
    # Per-event distributions: ((value, (percentiles...)), ...) with value from VALUES; each row
    # then carries min, max and those percentiles of that value over its events (from raw events).
    distributions: tuple[tuple[str, tuple[float, ...]], ...] = ()
    # Values from VALUES whose non-zero events each row counts (`Row.true_counts`; the zero ones
    # are `Row.false_count`): read off the sums where a measure counts them, else from raw events.
    true_counts: tuple[str, ...] = ()
    # Which sums to compute (names from SUM_FIELDS); empty means all. Requests are always counted.
    # Worth narrowing for raw-event queries, where every extra sum is work per event.
    sums: tuple[str, ...] = ()
    latency_range: bool = True  # min and max latency
    fill_empty: bool = True
    # A keyset page: at most `limit` rows in (bucket, group) order, each group compared as the
    # rollups store it (no member as 0, before every member), and only groups strictly after
    # `after_group` (one value per group_by dimension; meant for a range of one bucket, whose
    # earlier groups a previous page returned). Only rows with events (fill_empty=False).
    limit: int | None = None
    after_group: tuple[int | None, ...] | None = None

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("start and end must be aware datetimes")
        if self.end <= self.start:
            raise ValueError("end must be after start")
        unknown = set(self.group_by) - set(GROUPS)
        if unknown:
            raise ValueError(f"cannot group by {sorted(unknown)}")
        zoneinfo.ZoneInfo(self.timezone)  # raises for an unknown zone
        if set(self.sums) - set(SUM_FIELDS):
            raise ValueError(f"unknown sums {sorted(set(self.sums) - set(SUM_FIELDS))}")
        unknown_values = ({name for name, _ in self.distributions} | set(self.true_counts)) - set(VALUES)
        if unknown_values:
            raise ValueError(f"no per-event value {sorted(unknown_values)}")
        if (self.limit is not None or self.after_group is not None) and (
                self.fill_empty or self.percentiles or self.distributions or self.true_counts
                or self.conversations):
            raise ValueError("a keyset page holds only the sums of rows with events (fill_empty=False)")
        if self.after_group is not None and len(self.after_group) != len(self.group_by):
            raise ValueError("after_group needs one value per group_by dimension")

    @property
    def zone(self) -> zoneinfo.ZoneInfo:
        return zoneinfo.ZoneInfo(self.timezone)


class _RowReadings:
    """What a row reads off its measures; the measures themselves are its fields (Row below)."""

    __slots__ = ()

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @property
    def characters(self) -> int:
        return self.input_chars + self.output_chars

    @property
    def error_rate(self) -> Decimal:
        return Decimal(self.errors) / Decimal(self.requests) if self.requests else Decimal(0)

    @property
    def latency_avg_ms(self) -> Decimal | None:
        return Decimal(self.latency_sum_ms) / Decimal(self.requests) if self.requests else None

    @property
    def prompt_cost(self) -> Decimal:
        """What every prompt token cost: uncached, read from a cache or written to one."""
        return self.input_cost + self.cache_read_cost + self.cache_write_cost

    def false_count(self, value: str) -> int:
        """The row's events where `value` (one of its query's `true_counts`) is zero."""
        return self.requests - self.true_counts[value]


def _amount(measure: Measure) -> property:
    """A money measure read as a Decimal (`row.cost` from `row.cost_units`)."""
    return property(lambda row: from_units(getattr(row, measure.name)), doc=measure.description or None)


# One row of a result: its bucket, its group ({dimension: id}), a field per measure of the
# registry (named as the measure; a sum is 0 and a smallest or largest value None over no
# events), the conversations and the percentiles and distributions asked for, and the readings
# above, with each money measure as a Decimal.
Row = make_dataclass(
    "Row",
    [("bucket", Bucket),
     ("group", dict[str, int | None]),
     *((measure.name, int if measure.merge is Merge.SUM else int | None, measure.empty) for measure in ROW_MEASURES),
     ("conversations", int, 0),
     ("percentiles", dict[float, float | None], field(default_factory=dict)),
     ("distributions", dict[str, Distribution], field(default_factory=dict)),
     ("true_counts", dict[str, int], field(default_factory=dict))],
    bases=(_RowReadings,),
    namespace={measure.amount_name: _amount(measure) for measure in ROW_MEASURES if measure.money},
    slots=True,
    module=__name__,
)


@dataclass
class Result:
    rows: list[Row]
    buckets: list[Bucket]
    level: str  # which stored level answered the sums
    percentile_level: str | None = None


# --- level choice -------------------------------------------------------------------------

def _aligned(moment: datetime, seconds: int) -> bool:
    return epoch(moment) % seconds == 0 and moment.microsecond == 0


def _dimensions(query: UsageQuery) -> set[str]:
    """The dimensions a level must keep to answer the query: grouped by or filtered on."""
    needed = set(query.group_by)
    for name, used in (("department", query.departments), ("model", query.models or query.model_types),
                       ("key", query.keys), ("member", query.members)):
        if used:
            needed.add(name)
    return needed


def _on_local_grid(query: UsageQuery, org_zone: zoneinfo.ZoneInfo, seconds: int,
                   all_buckets: Sequence[Bucket]) -> bool:
    """Whether every edge of the query falls on a slot of `seconds` (a divisor of a day) on the
    organization's clock, so that each stored slot lies in exactly one bucket."""
    for moment in (query.start, query.end, *(b.start for b in all_buckets[1:])):
        # An instant starts a slot of the organization's clock when, read on that clock, it is
        # a whole number of slots past midnight (the buckets are already in the query's zone,
        # usually the organization's).
        local = moment if moment.tzinfo is org_zone else moment.astimezone(org_zone)
        if local.microsecond or (local.hour * 3600 + local.minute * 60 + local.second) % seconds:
            return False
    return True


def _fits(level: Level, query: UsageQuery, org_timezone: str, all_buckets: Sequence[Bucket] | None) -> bool:
    """Whether each of the query's buckets is a union of whole time slots of `level`."""
    time, granularity = level.time, query.granularity
    if time.kind is TimeKind.LOCAL_DAY:
        # Whole days of the organization's own calendar, in buckets of whole days.
        return (query.timezone == org_timezone and (granularity is None or granularity.unit is not None)
                and local_midnight(query.start, query.zone) == query.start
                and local_midnight(query.end, query.zone) == query.end)
    assert time.seconds is not None
    if time.organization_clock:
        if all_buckets is None:
            all_buckets = buckets(query.start, query.end, query.zone, granularity)
        return _on_local_grid(query, zoneinfo.ZoneInfo(org_timezone), time.seconds, all_buckets)
    # Fixed widths are aligned to the local midnight of the start, which is on a UTC grid of 15
    # minutes, so any multiple of the slot's width is exact.
    return (_aligned(query.start, time.seconds) and _aligned(query.end, time.seconds)
            and (granularity is None or granularity.unit is not None or granularity.seconds % time.seconds == 0))


def choose_level(query: UsageQuery, org_timezone: str, all_buckets: Sequence[Bucket] | None = None) -> str:
    """The name of the coarsest level whose rows are exact for this query."""
    return _choose_level(query, org_timezone, all_buckets).name


def _choose_level(query: UsageQuery, org_timezone: str, all_buckets: Sequence[Bucket] | None = None) -> Level:
    if query.trace or query.trace_roots_only or query.conversations:
        return levels.RAW  # only raw events keep tracing attributes and conversation ids
    # Every zone's offset is a multiple of 15 minutes, so the coarser levels' slots are unions
    # of the fine level's: a query off the fine grid is off every grid.
    if not _fits(levels.FINE, query, org_timezone, all_buckets):
        return levels.RAW
    needed = _dimensions(query)
    # The fine level keeps every dimension, so one is always found.
    return next(level for level in reversed(levels.ROLLUPS)
                if level.keeps(needed) and _fits(level, query, org_timezone, all_buckets))


def _pieces(query: UsageQuery, org_timezone: str, all_buckets: Sequence[Bucket]) -> list[tuple[UsageQuery, Level]]:
    """The query's range, split where that lets most of it come from a day level: a range that
    starts or ends inside a local day (Unix-second ranges, "the last 30 days" up to now) takes its
    whole days from a day level and only the partial days at either end from finer rows. Only
    for sums that add up across pieces, into buckets of whole local days."""
    level = _choose_level(query, org_timezone, all_buckets)
    granularity = query.granularity
    # Hour levels too: a 90-day range on the hour grid read 2,160 rows per model from the
    # model-hourly level where the model-daily level has 90 (measured at ten million events).
    splittable = (level.time.kind is not TimeKind.LOCAL_DAY and query.timezone == org_timezone
                  and not (query.conversations or query.trace or query.trace_roots_only)
                  and (granularity is None or granularity.unit is not None))
    if not splittable:
        return [(query, level)]
    zone = query.zone
    first_midnight = local_midnight(query.start, zone)
    if first_midnight < query.start:
        first_midnight = local_midnight_of(first_midnight.date() + timedelta(days=1), zone)
    last_midnight = local_midnight(query.end, zone)
    if first_midnight >= last_midnight:
        return [(query, level)]
    pieces = []
    for start, end in ((query.start, first_midnight), (first_midnight, last_midnight), (last_midnight, query.end)):
        if start < end:
            piece = replace(query, start=start, end=end)
            pieces.append((piece, _choose_level(piece, org_timezone)))
    return pieces


# --- SQL pieces ---------------------------------------------------------------------------

def _quote(name: str) -> str:
    return connection.ops.quote_name(name)


def _raw_epoch() -> str:
    if connection.vendor == "postgresql":
        # date_part is a double (EXTRACT is a numeric since PostgreSQL 14, three times slower per
        # row), exact to the microsecond at today's epochs. FLOOR first: a cast to bigint rounds,
        # which would move xx:04:59.6 into the next bucket.
        return 'CAST(FLOOR(date_part(\'epoch\', "timestamp")) AS BIGINT)'
    return "CAST(strftime('%%s', \"timestamp\") AS INTEGER)"


def _offset_case(query: UsageQuery, epoch_sql: str, span: UsageQuery | None = None) -> str:
    # Only the transitions of the rows read: a piece of a few hours needs no 90-day walk of the
    # zone (measured 22 ms of the r9s 90-day answer).
    span = span or query
    spans = offset_transitions(query.zone, span.start, span.end)
    if len(spans) == 1:
        return str(spans[0][1])
    whens = " ".join(f"WHEN {epoch_sql} < {spans[i + 1][0]} THEN {spans[i][1]}" for i in range(len(spans) - 1))
    return f"(CASE {whens} ELSE {spans[-1][1]} END)"


def _bucket_sql(query: UsageQuery, level: Level, epoch_sql: str,
                span: UsageQuery | None = None) -> tuple[str, str]:
    """SQL for the bucket a row falls in, and how to read it back: "index", "instant", "localday", "date"
    or "none"."""
    granularity = query.granularity
    if granularity is None:
        return "0", "none"
    if level.time.kind is TimeKind.LOCAL_DAY:
        return _quote(level.time.column), "date"
    if granularity.unit is None:
        origin = local_midnight(query.start, query.zone)
        if level.is_raw and connection.vendor == "postgresql":
            # Grouping on date_bin's timestamp is cheaper per row than any arithmetic on epochs;
            # the bucket index is worked out once per group.
            return (f"date_bin('{granularity.seconds} seconds', \"timestamp\", "
                    f"TIMESTAMPTZ '{origin.astimezone(UTC).isoformat()}')"), "instant"
        return f"(({epoch_sql} - {epoch(origin)}) / {granularity.seconds})", "index"
    # Calendar units: the local day number; days are then folded into weeks or months.
    return f"(({epoch_sql} + {_offset_case(query, epoch_sql, span)}) / {DAY})", "localday"


def _model_ids(query: UsageQuery) -> tuple[int, ...] | None:
    """The model filter, with model types resolved to ids; None when models are not filtered."""
    ids: set[int] | None = set(query.models) if query.models else None
    if query.model_types:
        typed = set(Model.objects.filter(modality__in=query.model_types).values_list("pk", flat=True))
        ids = typed if ids is None else ids & typed
    return tuple(sorted(ids)) if ids is not None else None


def _in(column: str, values: Sequence[Any], params: list[Any]) -> str:
    if not values:
        return "1 = 0"
    params.extend(values)
    return f"{column} IN ({', '.join(['%s'] * len(values))})"


def _where(query: UsageQuery, level: Level, params: list[Any]) -> str:
    clauses = ["organization_id = %s"]
    params.append(query.organization_id)
    time_column = _quote(level.time.column)
    clauses.append(f"{time_column} >= %s AND {time_column} < %s")
    time_field = level.model._meta.get_field(level.time.column)
    params.extend(time_field.get_db_prep_value(bound, connection)
                  for bound in level.time.bounds(query.start, query.end, query.zone))
    # None: not filtered on (model types may resolve to no model at all, which matches nothing).
    filters = {"department": query.departments or None, "key": query.keys or None, "member": query.members or None,
               "model": _model_ids(query)}
    for name, ids in filters.items():
        if ids is not None:
            clauses.append(_in(level.dimension_sql(name), ids, params))
    for name, values in query.trace:
        clauses.append(_in(name.removesuffix("s"), values, params))
    if query.trace_roots_only:
        clauses.append("parent_id IS NULL")
    return " AND ".join(clauses)


# --- running ------------------------------------------------------------------------------

def run(query: UsageQuery, *, org_timezone: str | None = None, level: str | None = None) -> Result:
    """Answer `query`. `level` forces a level (tests and the benchmark compare levels)."""
    if org_timezone is None:
        org_timezone = Organization.objects.values_list("timezone", flat=True).get(pk=query.organization_id)
    if query.conversations and level is None:
        counted = _counted_conversations(query, org_timezone)
        if counted is not None:
            result = run(replace(query, conversations=False), org_timezone=org_timezone)
            for row in result.rows:
                row.conversations = counted.get(row.group.get("department", activity.ORGANIZATION), 0)
            return result
    all_buckets = buckets(query.start, query.end, query.zone, query.granularity)
    if level:
        pieces = [(query, LEVEL_NAMED[level])]
    elif query.limit is not None:
        pieces = _disjoint_pieces(query, org_timezone, all_buckets)
    else:
        pieces = _pieces(query, org_timezone, all_buckets)
    rows: dict[tuple, Row] = {}
    # Sums from levels with histograms (the hourly and the daily ones) mean the query is known to
    # fit their histograms: read each stored slot's histogram (or, hour by hour, just the bins of
    # its percentiles) in the same statement as its sums. Ungrouped only: a level's histograms are
    # read one stored row at a time, and a row is no group of the query's.
    histograms: dict[Any, list[tuple]] | None = (
        {} if query.percentiles and not query.group_by
        and all(piece_level.histograms for _, piece_level in pieces) else None)
    for piece, piece_level in pieces:
        if query.limit is None:
            _sums(query, piece_level, all_buckets, rows, span=piece, histograms=histograms)
        elif len(rows) < query.limit:
            # Pieces follow each other in time: each continues the page where the last stopped.
            _sums(query, piece_level, all_buckets, rows, span=piece, limit=query.limit - len(rows))
    level = "+".join(dict.fromkeys(piece_level.name for _, piece_level in pieces))
    percentile_level = None
    if histograms is not None:
        percentile_level = level
        if not _percentiles_from(histograms, rows, query.percentiles):
            # Read per hour, some bucket met two stored hours: read the hours whole.
            percentile_level = _add_percentiles(query, rows, all_buckets, levels.HOURLY, per_hour=False)
    elif query.percentiles:
        percentile_level = _add_percentiles(query, rows, all_buckets,
                                            _histogram_level(query, org_timezone, all_buckets))
    if query.distributions:
        _add_distributions(query, rows, all_buckets)
    if query.true_counts:
        _add_true_counts(query, rows, all_buckets)
    if query.fill_empty:
        result_rows = _filled(query, rows, all_buckets)  # in bucket and group order already
    elif query.limit is not None:
        result_rows = list(rows.values())  # in the page's (bucket, stored group) order already
    else:
        # By epoch: the two buckets of a repeated hour (DST ending) share a wall time (PEP 495).
        result_rows = sorted(rows.values(), key=lambda row: (epoch(row.bucket.start),
                                                             _group_order(row.group.values())))
    return Result(result_rows, all_buckets, level, percentile_level)


def _counted_conversations(query: UsageQuery, org_timezone: str) -> dict[int, int] | None:
    """Distinct conversations from their per-day counts (usage/activity.py), by department id or
    activity.ORGANIZATION, when those answer the query exactly: one bucket of whole local days of
    the organization's clock, grouped by department or not at all, narrowed to departments only
    (to one, unless grouped by it); else None (counted over raw events)."""
    grouped = query.group_by == ("department",)
    if (query.granularity is not None or query.trace or query.trace_roots_only or query.distributions
            or query.group_by not in ((), ("department",)) or query.keys or query.models or query.model_types
            or query.members or (len(query.departments) > 1 and not grouped)
            or not _fits(levels.DEPARTMENT_DAILY, query, org_timezone, None)):
        return None
    # Grouped and not narrowed: every department's.
    scopes = query.departments or (None if grouped else (activity.ORGANIZATION,))
    counted = activity.conversations(query.organization_id, query.start, query.end,
                                     zoneinfo.ZoneInfo(org_timezone), scopes=scopes)
    if counted is not None and not grouped and query.departments:
        # Narrowed to one department, the total is that department's.
        counted = {activity.ORGANIZATION: counted.get(query.departments[0], 0)}
    return counted


def _disjoint_pieces(query: UsageQuery, org_timezone: str,
                     all_buckets: Sequence[Bucket]) -> list[tuple[UsageQuery, Level]]:
    """The query's pieces when no bucket takes rows from two of them (buckets of single days);
    otherwise the whole range from one level, so that a bucket's groups are met once."""
    pieces = _pieces(query, org_timezone, all_buckets)
    granularity = query.granularity
    if len(pieces) > 1 and not (granularity is not None and granularity.unit == "day" and granularity.days == 1):
        return [(query, _choose_level(query, org_timezone, all_buckets))]
    return pieces


def _one_row_per_group(query: UsageQuery, piece: UsageQuery, level: Level) -> bool:
    """Whether every row of a day level is a group of its own: grouped by all the level keeps,
    in single days, and with one currency in those days (a group has a row per currency, which
    happens only when an organization changed its currency)."""
    if (level.time.kind is not TimeKind.LOCAL_DAY or set(query.group_by) != set(level.dimensions)
            or query.granularity is None or query.granularity.unit != "day" or query.granularity.days != 1):
        return False
    first, last = levels.MODEL_DAILY.time.bounds(piece.start, piece.end, piece.zone)
    currencies = (levels.MODEL_DAILY.model.objects.filter(organization_id=query.organization_id, day__gte=first,
                                                          day__lt=last).values("currency").distinct()[:2])
    return len(currencies) <= 1


def _filtered(query: UsageQuery) -> bool:
    return bool(query.departments or query.keys or query.models or query.model_types or query.members
                or query.trace or query.trace_roots_only)


def row_counts(query: UsageQuery, *, org_timezone: str | None = None) -> dict[Any, int]:
    """How many groups have events in each bucket (by bucket key; buckets without any are left
    out): the row count of a grouped table, exact, without reading its rows. Counted in SQL on the
    levels `run` would read: whole local days from a day level keeping the groups, the rest from
    finer rows."""
    if org_timezone is None:
        org_timezone = Organization.objects.values_list("timezone", flat=True).get(pk=query.organization_id)
    all_buckets = buckets(query.start, query.end, query.zone, query.granularity)
    per_hour = _hour_group_counts(query, zoneinfo.ZoneInfo(org_timezone), all_buckets)
    if per_hour is not None:
        return per_hour
    counts: dict[Any, int] = defaultdict(int)
    for piece, level in _disjoint_pieces(query, org_timezone, all_buckets):
        params: list[Any] = []
        bucket_sql, kind = _bucket_sql(query, level, _raw_epoch() if level.is_raw else level.time.column, piece)
        groups = _group_columns(query, level, as_stored=True)
        where = _where(piece, level, params)
        if level is levels.KEY_DAILY and _one_row_per_group(query, piece, level) and not _filtered(query):
            # Every key-daily row of a day is one group: its day's count, kept at ingest (measured
            # at ten million events: 342,843 index entries for 90 days of the heaviest organization).
            sql = (f"SELECT {bucket_sql} AS b, {_quote('rows')} FROM {UsageKeyDailyRows._meta.db_table} "
                   f"WHERE {where} AND {_quote('rows')} > 0")
        elif _one_row_per_group(query, piece, level):
            # Each stored row is one group of one day: count the rows off the level's unique index
            # (measured: a hash of every group spills to disk at 300,000 groups).
            sql = f"SELECT {bucket_sql} AS b, COUNT(*) FROM {level.table} WHERE {where} GROUP BY b"
        else:
            sql = (f"SELECT b, COUNT(*) FROM (SELECT {', '.join([f'{bucket_sql} AS b', *groups])} "
                   f"FROM {level.table} WHERE {where} GROUP BY {', '.join(['b', *groups])}) AS grouped GROUP BY b")
        to_bucket = _bucket_mapper(query, kind, all_buckets)
        for raw_bucket, count in _fetch_all(sql, params):
            bucket = to_bucket(raw_bucket)
            if bucket is not None:
                counts[bucket.key] += count
    return dict(counts)


def _hour_group_counts(query: UsageQuery, org_zone: zoneinfo.ZoneInfo,
                       all_buckets: list[Bucket]) -> dict[Any, int] | None:
    """The hourly breakdown's row counts read off the per-hour group counts kept at ingest (one row
    an hour, not a hash of every fine row: 76 ms for 7 days at ten million events), when the query
    counts what those count (every group of department, key, member and model, unfiltered) in
    buckets that are each one whole local hour of the organization; None otherwise."""
    granularity = query.granularity
    if (granularity is None or granularity.unit is not None or granularity.seconds != levels.LOCAL_HOUR.seconds
            or set(query.group_by) != set(levels.HOUR_GROUP_DIMENSIONS) or _filtered(query)
            or not all_buckets or epoch(all_buckets[0].start) != epoch(query.start)
            or epoch(all_buckets[-1].end) != epoch(query.end)):  # by epoch: a repeated hour's wall time is two instants
        return None
    by_hour: dict[int, Bucket] = {}
    for bucket in all_buckets:
        hour = epoch(bucket.start)
        if epoch(bucket.end) - hour != levels.LOCAL_HOUR.seconds or not levels.is_clean_local_hour(hour, org_zone):
            return None
        by_hour[hour] = bucket
    counted = UsageHourGroups.objects.filter(organization_id=query.organization_id, hour__gte=epoch(query.start),
                                             hour__lt=epoch(query.end), groups__gt=0)
    return {by_hour[hour].key: groups for hour, groups in counted.values_list("hour", "groups")}


def combine_rows(rows: Iterable[Row], bucket: Bucket, group_by: Sequence[str],
                 measures: Sequence[str] | None = None) -> list[Row]:
    """Rows of several buckets added up per group of `group_by`, into `bucket` (a per-day series
    and its totals from one read), in group order. Exact: sums add, smallest and largest merge.
    `measures` names the ones wanted (all by default; requests are always added): this loop is
    most of the time of a per-key series' totals."""
    wanted = [measure for measure in ROW_MEASURES
              if measures is None or measure.name in measures or measure.name == "requests"]
    added = [measure.name for measure in wanted if measure.merge is Merge.SUM]
    merged = [(measure.name, measure.merge.add) for measure in wanted if measure.merge is not Merge.SUM]
    combined: dict[tuple, Row] = {}
    for row in rows:
        group = tuple(row.group.get(name) for name in group_by)
        total = combined.get(group)
        if total is None:
            combined[group] = total = Row(bucket, dict(zip(group_by, group, strict=True)))
        for name in added:
            setattr(total, name, getattr(total, name) + getattr(row, name))
        for name, add in merged:
            value = getattr(row, name)
            if value is not None:
                current = getattr(total, name)
                setattr(total, name, value if current is None else add(current, value))
    return [combined[group] for group in sorted(combined, key=_group_order)]


def _group_order(values: Iterable[int | None]) -> tuple:
    return tuple((value is None, value) for value in values)


def _bucket_mapper(query: UsageQuery, kind: str, all_buckets: list[Bucket]):
    """From what SQL returned as the bucket to our Bucket."""
    if kind == "none":
        return lambda raw: all_buckets[0]
    if kind == "index":
        by_key = {b.key: b for b in all_buckets}
        return lambda raw: by_key.get(int(raw))
    if kind == "instant":
        # By epoch, not by datetime: an aware datetime in a DST fold (the repeated hour) never
        # equals one in another zone (PEP 495), so UTC instants from the database would miss them.
        by_start = {epoch(b.start): b for b in all_buckets}
        return lambda raw: by_start.get(epoch(raw))
    by_day = {b.key: b for b in all_buckets}
    start, zone, granularity = query.start, query.zone, query.granularity
    single_days = granularity.unit == "day" and granularity.days == 1

    def from_day(raw: Any) -> Bucket | None:
        day = raw if isinstance(raw, date) else (
            date.fromisoformat(raw) if isinstance(raw, str) else day_from_number(int(raw)))
        return by_day.get(day if single_days else bucket_day(day, start, zone, granularity))

    return from_day


def _group_columns(query: UsageQuery, level: Level, *, as_stored: bool = False) -> list[str]:
    if as_stored and level.is_raw:
        return [DIMENSION_NAMED[name].folded_sql for name in query.group_by]
    return [level.dimension_sql(name) for name in query.group_by]


def _stored_group_value(name: str, value: int | None) -> int:
    if value is None:
        stored = DIMENSION_NAMED[name].none_stored_as
        if stored is None:
            raise ValueError(f"{name} always has a value")
        return stored
    return value


def _sums(query: UsageQuery, level: Level, all_buckets: list[Bucket], rows: dict[tuple, Row],
          span: UsageQuery, histograms: dict[Any, list[tuple]] | None = None,
          limit: int | None = None) -> None:
    """Add the sums of `span` (the query itself, or a piece of its range) read from `level` into
    `rows`, keyed by the query's bucket and group; from the hourly level, with `histograms`, merge
    each hour's latency histogram into its bucket's there too."""
    params: list[Any] = []
    epoch_sql = _raw_epoch() if level.is_raw else level.time.column
    bucket_sql, kind = _bucket_sql(query, level, epoch_sql, span)
    # A keyset page orders groups as the rollups store them, on raw events too.
    groups = _group_columns(query, level, as_stored=limit is not None)
    wanted = [measure for measure in SUMMED if not query.sums or measure.name in _needed_sums(query)]
    read = [*wanted, *(_LATENCY_RANGE if query.latency_range else ())]
    if level.is_raw:
        aggregates = [aggregate_over_events(measure.name) for measure in read]
        if query.conversations:
            # An event without a conversation id is a conversation of its own (API.md §1): count
            # those, and sort only the ids that can repeat.
            aggregates.append("COUNT(DISTINCT conversation_id) + COUNT(*) - COUNT(conversation_id)")
    else:
        aggregates = [measure.over_rollups() for measure in read]
    where = _where(span, level, params)
    if query.after_group is not None:
        # A row value, so that PostgreSQL seeks the rollup's unique index to the first later group.
        where += f" AND ({', '.join(groups)}) > ({', '.join(['%s'] * len(groups))})"
        params.extend(_stored_group_value(name, value) for name, value in zip(query.group_by, query.after_group,
                                                                                strict=True))
    with_histograms = histograms is not None and level.histograms
    if with_histograms:
        # One row per stored hour, whose histogram SQL cannot add up: no GROUP BY; the hours of
        # a bucket are added up below, as several SQL groups of one bucket are.
        columns = [measure.name for measure in read]
        histogram_columns = _histogram_columns(query, _per_hour(query))
        sql = (f"SELECT {', '.join([f'{bucket_sql} AS b', *columns, *histogram_columns])} "
               f"FROM {level.table} WHERE {where}")
    else:
        sql = (f"SELECT {', '.join([f'{bucket_sql} AS b', *groups, *aggregates])} FROM {level.table} "
               f"WHERE {where} GROUP BY {', '.join(['b', *groups])}")
        if limit is not None:
            # In the order of the day levels' unique index (organization, day, groups...): the
            # page is read off the index and stops after `limit` groups.
            sql += f" ORDER BY {', '.join(['b', *groups])} LIMIT {int(limit)}"
    to_bucket = _bucket_mapper(query, kind, all_buckets)
    with_conversations = level.is_raw and query.conversations
    # The per-row work below is most of a rollup query's time: keep it to slicing and one Row.
    group_names, width = query.group_by, len(groups)
    # A rollup stores "no member" as 0.
    convert_groups = any(DIMENSION_NAMED[name].none_stored_as is not None for name in group_names)
    # SUM of a bigint column is a numeric on PostgreSQL (a Decimal here); the rollup levels cast.
    convert_values = level.is_raw and connection.vendor == "postgresql"
    names = [measure.name for measure in read] + (["conversations"] if with_conversations else [])
    for record in _fetch_all(sql, params, binary=with_histograms):
        bucket = to_bucket(record[0])
        if bucket is None:
            continue
        group_values = record[1 : 1 + width]
        if convert_groups:
            group_values = tuple(_group_value(n, v) for n, v in zip(group_names, group_values, strict=True))
        if with_histograms:
            histograms.setdefault(bucket.key, []).append(record[-len(histogram_columns):])
            record = record[:-len(histogram_columns)]
        values = record[1 + width:]
        if convert_values:
            values = [int(value) for value in values]
        key = (bucket.key, group_values)
        row = rows.get(key)
        if row is None:
            rows[key] = Row(bucket, dict(zip(group_names, group_values, strict=True)),
                            **dict(zip(names, values, strict=True)))
        else:
            _accumulate(row, read, values, with_conversations=with_conversations)


def _fetch_all(sql: str, params: list[Any], *, binary: bool = False) -> list[tuple]:
    """Every row of one statement. `binary` asks PostgreSQL for binary results, which integer
    arrays (latency histograms) cost a third less to send and decode in; Django's cursors bind
    parameters on the client and cannot, so that one takes a server-binding psycopg cursor on the
    same connection (and transaction)."""
    if binary and connection.vendor == "postgresql":
        with psycopg_cursor() as cursor:
            cursor.execute(sql, params, binary=True)
            return cursor.fetchall()
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


def _group_value(name: str, value: Any) -> int | None:
    if value is None:
        return None
    value = int(value)
    return None if value == DIMENSION_NAMED[name].none_stored_as else value


def _accumulate(row: Row, measures: Sequence[Measure], values: Sequence[Any], with_conversations: bool) -> None:
    # Several SQL groups can land in one bucket (local days folded into weeks or months).
    for measure, value in zip(measures, values, strict=False):
        setattr(row, measure.name,
                measure.merge.combine(getattr(row, measure.name), None if value is None else int(value)))
    if with_conversations:
        row.conversations += int(values[len(measures)] or 0)


def _filled(query: UsageQuery, rows: dict[tuple, Row], all_buckets: list[Bucket]) -> list[Row]:
    groups = sorted({key[1] for key in rows}, key=_group_order)
    if not query.group_by:
        groups = [()]
    filled = []
    for bucket in all_buckets:
        for group in groups:
            row = rows.get((bucket.key, group))
            if row is None:
                row = Row(bucket, dict(zip(query.group_by, group, strict=True)))
                row.percentiles = {q: None for q in query.percentiles}
                row.distributions = {name: Distribution(percentiles={q: None for q in qs})
                                     for name, qs in query.distributions}
                row.true_counts = dict.fromkeys(query.true_counts, 0)
            filled.append(row)
    return filled


# --- percentiles --------------------------------------------------------------------------

def _histogram_level(query: UsageQuery, org_timezone: str, all_buckets: Sequence[Bucket]) -> Level | None:
    """The coarsest level whose latency histograms answer an ungrouped query's percentiles: one that
    keeps every dimension it filters by (the hourly level none, the department-daily level the
    department) and whose slots each fall in one bucket; None when only raw latencies do."""
    if query.group_by or query.trace or query.trace_roots_only:
        return None
    needed = _dimensions(query)
    for level in _HISTOGRAM_LEVELS:
        slot = level.time.seconds
        if (level.keeps(needed) and _fits(level, query, org_timezone, all_buckets)
                and (slot is None or query.granularity is None or query.granularity.unit is not None
                     or query.granularity.seconds % slot == 0)):
            return level
    return None


def _add_percentiles(query: UsageQuery, rows: dict[tuple, Row], all_buckets: list[Bucket],
                     level: Level | None, per_hour: bool | None = None) -> str:
    """Each row's percentiles from `level`'s histograms, or (None) exact from raw latencies."""
    params: list[Any] = []
    if level is not None:
        bucket_sql, kind = _bucket_sql(query, level, level.time.column)
        per_hour = _per_hour(query) if per_hour is None else per_hour
        sql = (f"SELECT {', '.join([f'{bucket_sql} AS b', *_histogram_columns(query, per_hour)])} "
               f"FROM {level.table} WHERE {_where(query, level, params)}")
        to_bucket = _bucket_mapper(query, kind, all_buckets)
        merged: dict[Any, list[tuple]] = {}
        for record in _fetch_all(sql, params, binary=True):
            bucket = to_bucket(record[0])
            if bucket is not None:
                merged.setdefault(bucket.key, []).append(record[1:])
        if not _percentiles_from(merged, rows, query.percentiles):
            return _add_percentiles(query, rows, all_buckets, level, per_hour=False)
        return level.name
    # Exact percentiles from raw latencies, grouped like the sums.
    bucket_sql, kind = _bucket_sql(query, levels.RAW, _raw_epoch())
    groups = _group_columns(query, levels.RAW)
    where = _where(query, levels.RAW, params)
    sql = (f"SELECT {bucket_sql} AS b, {', '.join(groups + ['latency_ms'])} FROM {levels.RAW.table} "
           f"WHERE {where}")
    to_bucket = _bucket_mapper(query, kind, all_buckets)
    latencies: dict[tuple, list[int]] = defaultdict(list)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        for record in cursor.fetchall():
            bucket = to_bucket(record[0])
            if bucket is None:
                continue
            group_values = tuple(_group_value(n, v) for n, v in zip(query.group_by, record[1:-1], strict=True))
            latencies[(bucket.key, group_values)].append(int(record[-1]))
    for key, row in rows.items():
        values = sorted(latencies.get(key, ()))
        row.percentiles = {q: _percentile(values, q) for q in query.percentiles}
    return levels.RAW.name


def _per_hour(query: UsageQuery) -> bool:
    """Whether each bucket is one hour, so one stored hour at most (a bucket that meets two
    anyway is read again whole: `_percentiles_from`)."""
    return (connection.vendor == "postgresql" and query.granularity is not None
            and query.granularity.unit is None and query.granularity.seconds == levels.HOURLY.time.seconds)


def _histogram_columns(query: UsageQuery, per_hour: bool) -> list[str]:
    """What a stored hour's latency histogram is read as: for one-hour buckets the hour's event
    count and, per percentile, the bins of its two ranks, found by PostgreSQL (measured: sending
    every bin of 720 hours to Python and reading them there was most of a 30-day hourly
    percentile query); otherwise the whole histogram (its bins are searched in Python)."""
    if not per_hour:
        return ["latency_bins"]
    columns = ["latency_bins[cardinality(latency_bins)]"]
    for q in query.percentiles:
        columns.extend(histogram.sql_rank_bins("latency_bins", q))
    return columns


def _percentiles_from(merged: dict[Any, list[tuple]], rows: dict[tuple, Row], percentiles: tuple[float, ...]) -> bool:
    """Each row's percentiles from what `_histogram_columns` read for its bucket. False when a
    bucket read per hour met more than one stored hour (its histograms must then be read whole)."""
    for (bucket_key, _group), row in rows.items():
        parts = merged.get(bucket_key, ())
        if parts and len(parts[0]) > 1:  # per hour: (n, low bin, high bin per percentile)
            if len(parts) > 1:
                return False
            n, *bins = parts[0]
            row.percentiles = {}
            for index, q in enumerate(percentiles):
                _below, fraction = histogram.ranks(n, q)
                row.percentiles[q] = histogram.interpolate(bins[2 * index], bins[2 * index + 1], fraction)
        else:
            row.percentiles = histogram.percentiles((_bins(part[0]) for part in parts), percentiles)
    return True


def _bins(stored: Any) -> list[int]:
    return json.loads(stored) if isinstance(stored, str) else stored


def _add_distributions(query: UsageQuery, rows: dict[tuple, Row], all_buckets: list[Bucket]) -> None:
    """Min, max and percentiles of per-event values, per row, from raw events."""
    params: list[Any] = []
    bucket_sql, kind = _bucket_sql(query, levels.RAW, _raw_epoch())
    groups = _group_columns(query, levels.RAW)
    names = [name for name, _ in query.distributions]
    sql = (f"SELECT {', '.join([bucket_sql + ' AS b', *groups, *(VALUES[n] for n in names)])} "
           f"FROM {levels.RAW.table} WHERE {_where(query, levels.RAW, params)}")
    to_bucket = _bucket_mapper(query, kind, all_buckets)
    values: dict[tuple, list[list[Any]]] = defaultdict(lambda: [[] for _ in names])
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        for record in cursor.fetchall():
            bucket = to_bucket(record[0])
            if bucket is None:
                continue
            group_record = record[1 : 1 + len(groups)]
            group_values = tuple(_group_value(n, v) for n, v in zip(query.group_by, group_record, strict=True))
            lists = values[(bucket.key, group_values)]
            for index, value in enumerate(record[1 + len(groups):]):
                lists[index].append(value)
    for key, row in rows.items():
        lists = values.get(key) or [[] for _ in names]
        for (name, qs), raw_values in zip(query.distributions, lists, strict=True):
            ordered = sorted(_as_value(name, v) for v in raw_values)
            row.distributions[name] = Distribution(
                min=ordered[0] if ordered else None, max=ordered[-1] if ordered else None,
                percentiles={q: _percentile(ordered, q) for q in qs})


def _needed_sums(query: UsageQuery) -> set[str]:
    """The sums a query reads: those it names, the requests, and those that count its true counts."""
    counted = {EVENT_VALUE_NAMED[name].counted_by for name in query.true_counts}
    return {*query.sums, "requests", *(name for name in counted if name is not None)}


def _add_true_counts(query: UsageQuery, rows: dict[tuple, Row], all_buckets: list[Bucket]) -> None:
    """Each row's events where each of `query.true_counts` is non-zero: read off its sums where a
    measure counts exactly those (errors, requests), else counted over raw events in SQL."""
    from_sums = [(name, EVENT_VALUE_NAMED[name].counted_by) for name in query.true_counts
                 if EVENT_VALUE_NAMED[name].counted_by is not None]
    for row in rows.values():
        row.true_counts = {name: getattr(row, measure) for name, measure in from_sums}
    counted = [name for name in query.true_counts if EVENT_VALUE_NAMED[name].counted_by is None]
    if not counted:
        return
    params: list[Any] = []
    bucket_sql, kind = _bucket_sql(query, levels.RAW, _raw_epoch())
    groups = _group_columns(query, levels.RAW)
    counts = [f"SUM(CASE WHEN ({VALUES[name]}) <> 0 THEN 1 ELSE 0 END)" for name in counted]
    sql = (f"SELECT {', '.join([bucket_sql + ' AS b', *groups, *counts])} FROM {levels.RAW.table} "
           f"WHERE {_where(query, levels.RAW, params)} GROUP BY {', '.join(['b', *groups])}")
    to_bucket = _bucket_mapper(query, kind, all_buckets)
    found: dict[tuple, list[int]] = defaultdict(lambda: [0] * len(counted))
    for record in _fetch_all(sql, params):
        bucket = to_bucket(record[0])
        if bucket is None:
            continue
        group_values = tuple(_group_value(n, v) for n, v in zip(query.group_by, record[1 : 1 + len(groups)],
                                                                 strict=True))
        totals = found[(bucket.key, group_values)]  # several SQL groups may land in one bucket
        for index, value in enumerate(record[1 + len(groups):]):
            totals[index] += int(value or 0)
    for key, row in rows.items():
        row.true_counts.update(zip(counted, found.get(key) or [0] * len(counted), strict=True))


def _as_value(name: str, value: Any) -> Any:
    if name in COST_VALUES:
        # SQLite hands back binary floats; rebuild the stored 8-place decimal.
        return from_units(round(Decimal(str(value)) * 10**8)) if value is not None else Decimal(0)
    return int(value or 0)


def _percentile(ordered: Sequence[Any], q: float) -> Any:
    """The exact q-th percentile of sorted values, as PostgreSQL's percentile_cont computes it
    (and usage.histogram.percentiles approximates): linear between the two values around rank
    (n − 1)·q/100. A cost stays a Decimal, kept to the 8 places every event amount has."""
    if not ordered:
        return None
    position = (len(ordered) - 1) * q / 100
    below = math.floor(position)
    value = ordered[below]
    fraction = position - below
    if isinstance(value, Decimal):
        if fraction:
            value += (ordered[below + 1] - value) * Decimal(repr(fraction))
        return round_event_amount(value)
    # A double, as percentile_cont's answer is, whether or not it falls between two values.
    return float(value + fraction * (ordered[below + 1] - value)) if fraction else float(value)


def total_cost_ever(organization) -> Decimal:
    """Everything an organization has used, from its first local day with usage to its last."""
    span = UsageDaily.objects.filter(organization=organization).aggregate(first=Min("day"), last=Max("day"))
    if span["first"] is None:
        return Decimal(0).quantize(Decimal("0.00000001"))
    zone = organization.zone
    return for_organization(organization).total(local_midnight_of(span["first"], zone),
                                                local_midnight_of(span["last"] + timedelta(days=1), zone)).cost


@dataclass(frozen=True)
class OrganizationUsage:
    """The engine for one organization: every query in its own timezone unless one is named
    (Weave's `timezone`), with the organization's clock deciding which stored levels fit."""

    organization: Any  # portal.models.Organization (below this floor only by its pk and timezone)

    def query(self, start: datetime, end: datetime, **fields: Any) -> UsageQuery:
        fields.setdefault("timezone", self.organization.timezone)
        return UsageQuery(organization_id=self.organization.pk, start=start, end=end, **fields)

    def run(self, start: datetime, end: datetime, **fields: Any) -> Result:
        return run(self.query(start, end, **fields), org_timezone=self.organization.timezone)

    def row_counts(self, start: datetime, end: datetime, **fields: Any) -> dict[Any, int]:
        """How many groups have events in each bucket (usage.query.row_counts)."""
        return row_counts(self.query(start, end, **fields), org_timezone=self.organization.timezone)

    def total(self, start: datetime, end: datetime, **fields: Any) -> Row:
        """The one row of an ungrouped, unbucketed query."""
        return self.run(start, end, **fields).rows[0]

    def over_days(self, first_day: date, end_day: date, *, by_day: bool, group_by: Sequence[str] = (),
                  **fields: Any) -> list[Row]:
        """Usage over the organization's local days [first_day, end_day), per day if `by_day`, per
        group of `group_by`: the rows of a usage table (AIone's obs/usage, the portal's explorer).
        A group with no request at all in a bucket is left out (the engine fills every group into
        every bucket); a plain daily series keeps its empty days."""
        zone = self.organization.zone
        rows = self.run(local_midnight_of(first_day, zone), local_midnight_of(end_day, zone),
                        granularity=Granularity.of("day") if by_day else None, group_by=tuple(group_by),
                        **fields).rows
        return rows if not group_by else [row for row in rows if row.requests]


def for_organization(organization) -> OrganizationUsage:
    return OrganizationUsage(organization)
