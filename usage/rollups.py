"""Rollup maintenance: fold stored events into every rollup level, with one additive
`INSERT ... ON CONFLICT DO UPDATE` per level. When: usage/folding.py (after the ingest commit,
from the queue of unfolded batches the ingest transaction writes).

Only rows that were really inserted are queued (what RETURNING gave back), so a replayed batch
adds nothing. Beside the levels, each local day's number of key-daily rows (UsageKeyDailyRows,
the breakdown's row count) and each local hour's number of breakdown groups (UsageHourGroups, the
hourly breakdown's) are kept by the same folds. Keys are sorted before writing so that
concurrent batches take row locks in the same order and cannot deadlock each other.

Two ways in, checked against each other by tests/usage/test_rollup_properties.py: on PostgreSQL
ingestion stores and queues a batch in one SQL statement (store_and_queue) and the folder folds
queued events in another (fold_stored); SQLite folding and every rebuild aggregate in Python
(fold_events). Both are derived from the registries: what a
level is keyed by from usage/levels.py, what it adds up and how from usage/measures.py.
"""

import collections
import functools
import itertools
import operator
import zlib
import zoneinfo
from collections.abc import Callable, Iterable, Sequence
from datetime import date, datetime
from typing import Any

from django.db import connection
from psycopg import sql

from portal.models import Organization
from usage import activity, histogram
from usage.bulk import column_types, stored_rows, write_rows
from usage.db import psycopg_cursor
from usage.levels import (
    DIMENSION_NAMED,
    FINE,
    HOUR_GROUP_DIMENSIONS,
    KEY_DAILY,
    LOCAL_HOUR,
    QUARTERS_OF_HOUR,
    ROLLUPS,
    Level,
    TimeKey,
    local_hour_of,
)
from usage.measures import MEASURE_NAMED, MEASURES, Measure, Merge
from usage.models import UsageEvent, UsageFillState, UsageFoldQueue, UsageHourGroups, UsageKeyDailyRows

# What ingestion folds events into (the rollup levels of usage/levels.py), finest first.
LEVELS = ROLLUPS
# The time slots the rollups are keyed by, one per time column (the day levels share theirs).
_ROLLUP_TIMES: tuple[TimeKey, ...] = tuple({level.time.column: level.time for level in ROLLUPS}.values())
_FILL_STATE_MERGES = (("newest_event_at", Merge.MAX), ("events", Merge.SUM))


def aggregate_over_events(column: str) -> str:
    """SQL aggregating raw events into a rollup column (cost columns in whole 1e-8 units)."""
    return MEASURE_NAMED[column].over_events(connection.vendor)


def _time_slots(moment: datetime, zone: zoneinfo.ZoneInfo) -> dict[str, int | date]:
    """An event's slot in each rollup time column, by column name. Worked out with Python's
    zoneinfo, as the query engine's buckets are, so that both agree on every zone."""
    epoch = int(moment.timestamp())
    local = moment.astimezone(zone)
    utc_offset = int(local.utcoffset().total_seconds())
    local_day = local.date()
    return {time.column: time.of(epoch, utc_offset, local_day) for time in _ROLLUP_TIMES}


def _on_conflict(table: str, key_columns: Sequence[str], merges: Iterable[tuple[str, Merge]]) -> str:
    """ON CONFLICT (key) DO UPDATE: each stored value merged with the new one."""
    quote = connection.ops.quote_name
    updates = [f"{quote(column)} = "
               + merge.on_conflict(f"{quote(table)}.{quote(column)}", f"EXCLUDED.{quote(column)}", connection.vendor)
               for column, merge in merges]
    return f"({', '.join(quote(column) for column in key_columns)}) DO UPDATE SET " + ", ".join(updates)


def _conflict_clause(level: Level) -> str:
    return _on_conflict(level.table, level.key_columns, ((measure.name, measure.merge) for measure in level.measures))


def _fill_state_conflict() -> str:
    return _on_conflict(UsageFillState._meta.db_table, ("organization_id",), _FILL_STATE_MERGES)


def _upsert(level: Level, rows: Sequence[Sequence[Any]]) -> None:
    if not rows:
        return
    columns = [*level.key_columns, *level.metric_columns]
    if connection.vendor == "sqlite":
        # Python's sqlite3 binds neither dates nor lists: each value as its model field stores it.
        fields = [level.model._meta.get_field(column) for column in columns]
        rows = [[field.get_db_prep_value(value, connection) for field, value in zip(fields, row, strict=True)]
                for row in rows]
    write_rows(level.table, columns, column_types(level.model, columns), rows, conflict=_conflict_clause(level))


# --- Python: fold stored or rated events -------------------------------------------------------

def _count_in_bin(counts: dict[int, int], bin_index: int) -> dict[int, int]:
    counts[bin_index] = counts.get(bin_index, 0) + 1
    return counts


def _first_in_bin(bin_index: int) -> dict[int, int]:
    return {bin_index: 1}


def _same(value: Any) -> Any:
    return value


def _event_folds(level: Level) -> tuple[tuple[str, Callable[[Any], Any], Callable[[Any, Any], Any]], ...]:
    """For each measure of `level`: its name, how the first event's value starts a row's total,
    and how each later event's joins it. A histogram is folded as counts per bin (sparse) and
    made dense when written."""
    return tuple((measure.name, _first_in_bin, _count_in_bin) if measure.merge is Merge.HISTOGRAM
                 else (measure.name, _same, measure.merge.add) for measure in level.measures)


def _stored_value(measure: Measure) -> Callable[[Any], Any]:
    return histogram.encode if measure.merge is Merge.HISTOGRAM else _same


def fold_events(events: Iterable[Any], zones: dict[int, zoneinfo.ZoneInfo] | None = None, *,
                freshness: bool = True, only: Sequence[Level] | None = None) -> None:
    """Add `events` (stored, rated UsageEvent rows) into every rollup level and, unless told not to
    (a partial rebuild refolds events already counted), the fill state and the conversations and
    peaks (usage/activity.py). SQLite folding and every rebuild come through here; PostgreSQL
    folding is in SQL (fold_stored). `only` folds into those levels alone (a migration filling a
    new level on SQLite), nothing else."""
    events = list(events)
    if not events:
        return
    if zones is None:
        zones = organization_zones({e.organization_id for e in events})
    lock_organizations(zones)
    # Each level with how its measures fold and its rows' running totals, by key.
    levels: list[tuple[Level, tuple, dict[tuple, dict[str, Any]]]] = [
        (level, _event_folds(level), {}) for level in (LEVELS if only is None else only)]
    fresh: dict[int, list] = {}
    hours: set[tuple[int, int]] = set()
    for event in events:
        values = {measure.name: measure.of_event(event) for measure in MEASURES}
        slots = _time_slots(event.timestamp, zones[event.organization_id])
        hours.add((event.organization_id, slots[LOCAL_HOUR.column]))
        for level, level_folds, rows in levels:
            key = level.key_of(event, slots[level.time.column])
            totals = rows.get(key)
            if totals is None:
                rows[key] = {name: first(values[name]) for name, first, _add in level_folds}
            else:
                for name, _first, add in level_folds:
                    totals[name] = add(totals[name], values[name])
        state = fresh.setdefault(event.organization_id, [event.timestamp, 0])
        state[0] = max(state[0], event.timestamp)
        state[1] += 1
    for level, _folds, rows in levels:
        stored = [(measure.name, _stored_value(measure)) for measure in level.measures]
        # Sorted, so that concurrent batches take row locks in the same order.
        _upsert(level, [[*key, *(store(totals[name]) for name, store in stored)]
                        for key, totals in sorted(rows.items(), key=operator.itemgetter(0))])
    if only is not None:
        return
    recount_key_daily_rows({(key[0], key[1]) for key in levels[LEVELS.index(KEY_DAILY)][2]})
    recount_hour_groups(hours, zones)
    if freshness:
        _upsert_freshness(fresh)
        activity.fold_events(events, zones)


# --- how many key-daily rows a day has (UsageKeyDailyRows) --------------------------------------
# PostgreSQL's fold statement adds the key-daily rows it inserted (xmax = 0 in RETURNING: the
# row's first version) to their day's count; the Python folds recount the days they touched.

_KEY_DAILY_ROWS = UsageKeyDailyRows._meta.db_table
_KEY_DAILY_ROWS_KEY = ("organization_id", KEY_DAILY.time.column)


def recount_key_daily_rows(days: Iterable[tuple[int, date]]) -> None:
    """Set the key-daily row count of each (organization, local day) in `days` to the rows stored
    now (after a Python fold or a rebuild of those days)."""
    by_organization: dict[int, list[date]] = collections.defaultdict(list)
    for organization_id, day in sorted(set(days)):
        by_organization[organization_id].append(day)
    if not by_organization:
        return
    quote = connection.ops.quote_name
    day_field = UsageKeyDailyRows._meta.get_field(KEY_DAILY.time.column)
    day_column = quote(KEY_DAILY.time.column)
    clauses, params = [], []
    for organization_id, organization_days in by_organization.items():
        clauses.append(f"(organization_id = %s AND {day_column} IN ({', '.join(['%s'] * len(organization_days))}))")
        params.extend([organization_id, *(day_field.get_db_prep_value(day, connection) for day in organization_days)])
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {quote(_KEY_DAILY_ROWS)} (organization_id, {day_column}, {quote('rows')}) "
            f"SELECT organization_id, {day_column}, COUNT(*) FROM {quote(KEY_DAILY.table)} "
            f"WHERE {' OR '.join(clauses)} GROUP BY 1, 2 ORDER BY 1, 2 "
            f"ON CONFLICT (organization_id, {day_column}) DO UPDATE SET {quote('rows')} = EXCLUDED.{quote('rows')}",
            params)


# --- how many breakdown groups a local hour has (UsageHourGroups) -------------------------------
# A group is what a row of the hourly breakdown is: a department, key, member and model with
# events in the hour. PostgreSQL's fold statement adds the batch's groups that the fine level did
# not hold before it (its snapshot: every fold of the organization that committed first, see
# lock_organizations); the Python folds recount the hours they touched.

_HOUR_GROUPS = UsageHourGroups._meta.db_table
# pg_advisory_xact_lock(class, organization) for folds of one organization ("fold" in ASCII).
ORGANIZATION_FOLD_LOCK = 0x666F6C64
_RECOUNT_HOURS = 700  # hours per recount statement: 4 slots of 3 values each, within SQLite's 32,766


def lock_organizations(organization_ids: Iterable[int]) -> None:
    """Make folds of the same organizations take turns (PostgreSQL; SQLite has one writer): a
    transaction-scoped advisory lock per organization, in id order, taken before the fold's
    statement so that its snapshot holds every fold of theirs that committed first. The hour
    groups need it: two folds of one hour each missing the other's uncommitted fine rows would
    both count a new group. Folds of one organization already waited for each other at its
    fill-state row; this moves the wait before the snapshot."""
    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s, id) FROM unnest(%s::integer[]) AS id",
                       [ORGANIZATION_FOLD_LOCK, sorted(set(organization_ids))])


def recount_hour_groups(hours: Iterable[tuple[int, int]], zones: dict[int, zoneinfo.ZoneInfo]) -> None:
    """Set the group count of each (organization, local hour) in `hours` to what the fine level
    holds now (after a Python fold or a rebuild of those hours): the groups of the 15-minute
    slots whose local hour it is."""
    quote = connection.ops.quote_name
    group_columns = [DIMENSION_NAMED[name].column for name in HOUR_GROUP_DIMENSIONS]
    bucket = quote(FINE.time.column)
    for chunk in itertools.batched(sorted(set(hours)), _RECOUNT_HOURS):
        slots = [(organization_id, hour + quarter, hour) for organization_id, hour in chunk
                 for quarter in QUARTERS_OF_HOUR if local_hour_of(hour + quarter, zones[organization_id]) == hour]
        with connection.cursor() as cursor:
            cursor.execute(
                f"WITH slots (organization_id, slot, hour) AS (VALUES {', '.join(['(%s, %s, %s)'] * len(slots))}) "
                f"INSERT INTO {quote(_HOUR_GROUPS)} (organization_id, {quote(LOCAL_HOUR.column)}, groups) "
                f"SELECT organization_id, hour, COUNT(*) FROM (SELECT DISTINCT slots.organization_id, slots.hour, "
                f"{', '.join(f'fine.{quote(column)}' for column in group_columns)} FROM slots "
                f"JOIN {quote(FINE.table)} AS fine ON fine.organization_id = slots.organization_id "
                f"AND fine.{bucket} = slots.slot) AS grouped GROUP BY 1, 2 ORDER BY 1, 2 "
                f"ON CONFLICT (organization_id, {quote(LOCAL_HOUR.column)}) DO UPDATE SET groups = EXCLUDED.groups",
                [value for slot in slots for value in slot])


# --- PostgreSQL: insert and fold in one statement ---------------------------------------------

# Session-local, so a pooled server session can outlive a deploy that changes its columns: the
# name carries its shape (_staging_table), and an old-shaped table is simply never used again.
STAGING_TABLE = "usage_ingest_staging"
FOLD_STAGING_TABLE = "usage_fold_staging"
# Histogram bins are worked out in Python (histogram.bin_of) and staged beside each event: SQL's
# floating point would put a latency at an exact power of γ one bin off.
_BINNED: tuple[Measure, ...] = tuple(measure for measure in MEASURES if measure.merge is Merge.HISTOGRAM)


def _staged_bin(measure: Measure) -> str:
    return f"bin_of_{measure.event_sql}"


# What the staging table holds besides the event's own columns: the event's slot in each rollup
# time column, and its bin of each histogram.
_STAGING_EXTRA: tuple[tuple[str, str], ...] = (
    *((time.column, time.sql_type) for time in _ROLLUP_TIMES),
    *((_staged_bin(measure), "integer") for measure in _BINNED),
)

_CREATE_STAGING = sql.SQL("""
    CREATE TEMP TABLE IF NOT EXISTS {staging} ON COMMIT DELETE ROWS AS
    SELECT {event_columns}, {extra_columns} FROM {events} WITH NO DATA""")

# Ingestion's statement: insert the staged events whose request_id is new and queue exactly
# those for folding (usage/folding.py), one queue row per organization; return the events'
# (id, request_id) and the queue rows' (id, NULL).
_STORE = sql.SQL("""
    WITH inserted AS (
        INSERT INTO {events} ({event_columns})
        SELECT {event_columns} FROM {staging}
        ON CONFLICT (request_id) DO NOTHING
        RETURNING id, request_id, organization_id
    ),
    queued AS (
        INSERT INTO {queue} (organization_id, event_ids, events, queued_at)
        SELECT organization_id, jsonb_agg(id ORDER BY id), COUNT(*), now() FROM inserted GROUP BY 1 ORDER BY 1
        RETURNING id
    )
    SELECT id, request_id FROM inserted UNION ALL SELECT id, NULL FROM queued""")

# What a folder stages for stored events: each one's id, organization and instant, with its slot
# in each rollup time column and its bin of each histogram (worked out in Python).
_CREATE_FOLD_STAGING = sql.SQL("""
    CREATE TEMP TABLE IF NOT EXISTS {staging} ON COMMIT DELETE ROWS AS
    SELECT id AS event_id, organization_id, "timestamp", {extra_columns} FROM {events} WITH NO DATA""")

# The folder's statement: add the staged stored events (`new`: each event's row with its slots
# and bins) into every level and the fill state; return how many. Each stored row is fetched by
# its primary key whatever the statistics say (LATERAL with LIMIT 1 is never turned into a join):
# the temporary table has none, and a hash join would read the whole raw table.
_FOLD = sql.SQL("""
    WITH new AS (
        SELECT stored.*, {staged_extras} FROM {staging} AS staged
        CROSS JOIN LATERAL (SELECT * FROM {events} WHERE id = staged.event_id LIMIT 1) AS stored
    ),
    {levels},
    fill_state AS (
        INSERT INTO {fill_state} (organization_id, newest_event_at, events)
        SELECT organization_id, MAX("timestamp"), COUNT(*) FROM new GROUP BY 1 ORDER BY 1
        ON CONFLICT {fill_state_conflict}
    ),
    {key_daily_rows},
    {hour_groups},
    {activity}
    SELECT COUNT(*) FROM new""")

# GROUP BY makes each key appear once (ON CONFLICT may touch a row only once per statement);
# ORDER BY takes row locks in key order, so concurrent batches cannot deadlock.
_FOLD_LEVEL = sql.SQL("""{name} AS (
        INSERT INTO {table} ({columns})
        SELECT * FROM ({batch}) AS batch ORDER BY {key_positions}
        ON CONFLICT {conflict}{returning}
    )""")
# The key-daily rows the fold inserted, added to their day's count (a row whose first version
# this statement wrote has xmax 0; an updated one carries this transaction's id).
_KEY_DAILY_RETURNING = sql.SQL(" RETURNING organization_id, {day}, xmax = 0 AS inserted")
_KEY_DAILY_ROWS_FOLD = sql.SQL("""key_daily_rows AS (
        INSERT INTO {table} (organization_id, {day}, {rows})
        SELECT organization_id, {day}, COUNT(*) FROM {key_daily} WHERE inserted GROUP BY 1, 2 ORDER BY 1, 2
        ON CONFLICT (organization_id, {day}) DO UPDATE SET {rows} = {table}.{rows} + EXCLUDED.{rows}
    )""")
# The batch's groups of each local hour that the fine level held in none of the hour's slots
# before this statement, added to the hour's count. Only a group one of whose fine rows this
# statement inserted can be new to its hour, and each of those is looked up by the fine level's
# unique index (LATERAL with LIMIT 1, never turned into a join over the whole level): at ten
# million events, 767 look-ups took 12 ms.
_FINE_RETURNING = sql.SQL(" RETURNING organization_id, {bucket}, {groups}, xmax = 0 AS inserted")
_HOUR_GROUPS_FOLD = sql.SQL("""hour_groups AS (
        INSERT INTO {table} (organization_id, {hour}, groups)
        SELECT batch.organization_id, batch.{hour}, COUNT(*) FROM (
            SELECT DISTINCT organization_id, {hour}, {groups} FROM (
                SELECT DISTINCT organization_id, {hour}, {bucket}, {group_values} FROM new
            ) AS slotted JOIN (
                SELECT organization_id, {bucket}, {groups} FROM {fine_folded} WHERE inserted
            ) AS inserted_rows USING (organization_id, {bucket}, {groups})
        ) AS batch
        LEFT JOIN LATERAL (
            SELECT 1 AS seen FROM {fine} AS stored
            WHERE stored.organization_id = batch.organization_id AND stored.{bucket} = ANY(ARRAY[{slots}])
              AND {same_group} LIMIT 1
        ) AS earlier ON true
        WHERE earlier.seen IS NULL GROUP BY 1, 2 ORDER BY 1, 2
        ON CONFLICT (organization_id, {hour}) DO UPDATE SET groups = {table}.groups + EXCLUDED.groups
    )""")
_BATCH_AGGREGATES = sql.SQL("SELECT {keys}, {aggregates} FROM new GROUP BY {key_positions}")
# The batch's histogram of each key: counts per bin (ascending), encoded as stored, beside the aggregates.
_BATCH_AGGREGATES_AND_HISTOGRAM = sql.SQL("""
        SELECT * FROM ({aggregates}) AS aggregates JOIN (
            SELECT {key_columns}, usage_bins_dense(array_agg({bin} ORDER BY {bin}), array_agg(n ORDER BY {bin})) FROM (
                SELECT {keys}, {bin}, CAST(COUNT(*) AS integer) AS n FROM new GROUP BY {key_positions}, {bin}
            ) AS per_bin GROUP BY {key_positions}
        ) AS histograms USING ({key_columns})""")


def _identifiers(names: Iterable[str]) -> sql.Composed:
    return sql.SQL(", ").join(map(sql.Identifier, names))


@functools.cache
def _event_columns() -> tuple[str, ...]:
    return tuple(field.column for field in UsageEvent._meta.concrete_fields if not field.primary_key)


@functools.cache
def _staging_table() -> str:
    shape = ",".join([*_event_columns(), *(f"{name} {kind}" for name, kind in _STAGING_EXTRA)])
    return f"{STAGING_TABLE}_{zlib.crc32(shape.encode()):08x}"


@functools.cache
def _fold_staging_table() -> str:
    shape = ",".join(["event_id", *(f"{name} {kind}" for name, kind in _STAGING_EXTRA)])
    return f"{FOLD_STAGING_TABLE}_{zlib.crc32(shape.encode()):08x}"


def _extra_columns() -> sql.Composed:
    return sql.SQL(", ").join(sql.SQL("NULL::{} AS {}").format(sql.SQL(kind), sql.Identifier(name))
                              for name, kind in _STAGING_EXTRA)


def _fold_level(number: int, level: Level) -> sql.Composed:
    """One level's part of the fold statement: the batch's new events grouped by the level's key,
    aggregated and added into it."""
    key_positions = sql.SQL(", ").join(sql.SQL(str(position)) for position in range(1, len(level.key_columns) + 1))
    keys = sql.SQL(", ").join(sql.SQL("{} AS {}").format(sql.SQL(expression), sql.Identifier(column))
                              for expression, column in zip(level.key_sql, level.key_columns, strict=True))
    aggregated = [measure for measure in level.measures if measure.merge is not Merge.HISTOGRAM]
    batch = _BATCH_AGGREGATES.format(
        keys=keys, key_positions=key_positions,
        aggregates=sql.SQL(", ").join(sql.SQL("{} AS {}").format(sql.SQL(measure.over_events("postgresql")),
                                                                 sql.Identifier(measure.name))
                                      for measure in aggregated))
    binned = [measure for measure in level.measures if measure.merge is Merge.HISTOGRAM]
    if binned:
        (histogram_measure,) = binned  # the statement joins one histogram per key
        batch = _BATCH_AGGREGATES_AND_HISTOGRAM.format(
            aggregates=batch, keys=keys, key_positions=key_positions, key_columns=_identifiers(level.key_columns),
            bin=sql.Identifier(_staged_bin(histogram_measure)))
    return _FOLD_LEVEL.format(
        name=sql.Identifier(f"level{number}"), table=sql.Identifier(level.table),
        columns=_identifiers([*level.key_columns, *(measure.name for measure in aggregated + binned)]),
        batch=batch, key_positions=key_positions, conflict=sql.SQL(_conflict_clause(level)),
        returning=_KEY_DAILY_RETURNING.format(day=sql.Identifier(level.time.column)) if level is KEY_DAILY
        else _FINE_RETURNING.format(bucket=sql.Identifier(level.time.column), groups=_hour_group_columns())
        if level is FINE else sql.SQL(""))


@functools.cache  # PostgreSQL only, so the text never changes within a process
def _store_statement() -> str:
    return _STORE.format(
        events=sql.Identifier(UsageEvent._meta.db_table), event_columns=_identifiers(_event_columns()),
        staging=sql.Identifier(_staging_table()), queue=sql.Identifier(UsageFoldQueue._meta.db_table)).as_string()


@functools.cache  # PostgreSQL only, so the text never changes within a process
def _fold_statement() -> str:
    return _FOLD.format(
        events=sql.Identifier(UsageEvent._meta.db_table), staging=sql.Identifier(_fold_staging_table()),
        staged_extras=sql.SQL(", ").join(sql.SQL("staged.{}").format(sql.Identifier(name))
                                         for name, _kind in _STAGING_EXTRA),
        levels=sql.SQL(",\n    ").join(_fold_level(n, level) for n, level in enumerate(LEVELS)),
        fill_state=sql.Identifier(UsageFillState._meta.db_table),
        fill_state_conflict=sql.SQL(_fill_state_conflict()),
        key_daily_rows=_KEY_DAILY_ROWS_FOLD.format(
            table=sql.Identifier(_KEY_DAILY_ROWS), day=sql.Identifier(KEY_DAILY.time.column),
            rows=sql.Identifier("rows"), key_daily=sql.Identifier(f"level{LEVELS.index(KEY_DAILY)}")),
        hour_groups=_hour_groups_fold(),
        activity=sql.SQL(",\n    ".join(activity.fold_sql()))).as_string()


def _hour_group_columns() -> sql.Composed:
    return _identifiers(DIMENSION_NAMED[name].column for name in HOUR_GROUP_DIMENSIONS)


def _hour_groups_fold() -> sql.Composed:
    hour = sql.Identifier(LOCAL_HOUR.column)
    dimensions = [DIMENSION_NAMED[name] for name in HOUR_GROUP_DIMENSIONS]
    return _HOUR_GROUPS_FOLD.format(
        table=sql.Identifier(_HOUR_GROUPS), hour=hour, fine=sql.Identifier(FINE.table),
        bucket=sql.Identifier(FINE.time.column), groups=_hour_group_columns(),
        fine_folded=sql.Identifier(f"level{LEVELS.index(FINE)}"),
        group_values=sql.SQL(", ").join(sql.SQL("{} AS {}").format(sql.SQL(d.folded_sql), sql.Identifier(d.column))
                                        for d in dimensions),
        slots=sql.SQL(", ").join(sql.SQL("batch.{} + {}").format(hour, sql.Literal(quarter))
                                 for quarter in QUARTERS_OF_HOUR),
        same_group=sql.SQL(" AND ").join(sql.SQL("stored.{column} = batch.{column}").format(
            column=sql.Identifier(d.column)) for d in dimensions))


def store_and_queue(rows: Sequence[Any]) -> tuple[list[Any], list[int]]:
    """PostgreSQL ingestion of rated events (usage.services.RatedEvent): COPY them into a
    session-local staging table, then one statement stores the new ones and queues them for
    folding (usage/folding.py). Returns the rows that were new, with their ids set, and the ids of
    the queue rows. Must run inside the ingest transaction. No rollup row is touched: the hot
    rows every concurrent batch would otherwise wait on are the folder's."""
    if not rows:
        return [], []
    columns = _event_columns()
    values_of = operator.attrgetter(*_attnames(columns))
    staging = sql.Identifier(_staging_table())
    unknown_yet = (None,) * len(_STAGING_EXTRA)  # slots and bins: the folder works them out
    # Never prepared: the statements' text is the same every batch, but the staging table holds
    # a different batch each time, and a plan cached for one batch's size would serve them all.
    with psycopg_cursor() as cursor:
        cursor.execute(_CREATE_STAGING.format(
            staging=staging, events=sql.Identifier(UsageEvent._meta.db_table), event_columns=_identifiers(columns),
            extra_columns=_extra_columns()), prepare=False)
        # COPY's rows are encoded in C; the same arrays through unnest() were dumped in Python.
        with cursor.copy(sql.SQL("COPY {} FROM STDIN").format(staging)) as copy:
            for row in rows:
                copy.write_row((*values_of(row), *unknown_yet))
        cursor.execute(_store_statement(), prepare=False)
        returned = cursor.fetchall()
        # Inside a longer transaction the staging rows would outlive this batch; ON COMMIT
        # DELETE ROWS clears them otherwise.
        cursor.execute(sql.SQL("DELETE FROM {}").format(staging), prepare=False)
    queued = [pk for pk, request_id in returned if request_id is None]
    return stored_rows(rows, [pair for pair in returned if pair[1] is not None]), queued


def fold_stored(event_ids: Sequence[int]) -> int:
    """PostgreSQL folding of stored events (by id) into every level, the fill state, conversations
    and peaks: their slots and bins worked out in Python and COPYed into a staging table, then one
    statement adds them into every level, then their minutes' peaks are recounted. Returns how
    many were folded. Runs in the caller's transaction (usage.folding claims, folds and dequeues
    in one)."""
    if not event_ids:
        return 0
    staging = sql.Identifier(_fold_staging_table())
    stored_row = _stored_row_type()
    with psycopg_cursor() as cursor:
        cursor.execute(_CREATE_FOLD_STAGING.format(staging=staging, events=sql.Identifier(UsageEvent._meta.db_table),
                                                   extra_columns=_extra_columns()), prepare=False)
        cursor.execute(sql.SQL('SELECT id, organization_id, "timestamp", {binned} FROM {events} '
                               "WHERE id = ANY(%s::bigint[])").format(
            binned=_identifiers(measure.event_sql for measure in _BINNED) if _BINNED else sql.SQL("NULL"),
            events=sql.Identifier(UsageEvent._meta.db_table)), [list(event_ids)], prepare=False)
        stored = [stored_row(*record) for record in cursor.fetchall()]
        zones = organization_zones({event.organization_id for event in stored})
        lock_organizations(zones)
        with cursor.copy(sql.SQL("COPY {} FROM STDIN").format(staging)) as copy:
            for event in stored:
                slots = _time_slots(event.timestamp, zones[event.organization_id])
                copy.write_row((event.id, event.organization_id, event.timestamp, *slots.values(),
                                *[measure.of_event(event) for measure in _BINNED]))
        cursor.execute(_fold_statement(), prepare=False)
        (folded,) = cursor.fetchone()
        # A new statement, so a new snapshot: it sees every batch that committed to these hours
        # while the fold statement waited for their peak rows (usage/activity.py).
        cursor.execute(activity.recount_peaks_sql(_fold_staging_table()), prepare=False)
        cursor.execute(sql.SQL("DELETE FROM {}").format(staging), prepare=False)
    return folded


@functools.cache
def _stored_row_type() -> type:
    """What fold_stored reads of a stored event: enough for its slots and its bins."""
    binned = [measure.event_sql for measure in _BINNED] or ["unbinned"]
    return collections.namedtuple("StoredEvent", ["id", "organization_id", "timestamp", *binned])


def _attnames(columns: Sequence[str]) -> list[str]:
    by_column = {field.column: field.attname for field in UsageEvent._meta.concrete_fields}
    return [by_column[column] for column in columns]


def _upsert_freshness(freshness: dict[int, list]) -> None:
    rows = sorted(freshness.items())
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {connection.ops.quote_name(UsageFillState._meta.db_table)} "
            "(organization_id, newest_event_at, events) VALUES " + ", ".join(["(%s, %s, %s)"] * len(rows))
            + f" ON CONFLICT {_fill_state_conflict()}",
            [value for org, (newest, count) in rows
             for value in (org, connection.ops.adapt_datetimefield_value(newest), count)],
        )


def organization_zones(organization_ids: Iterable[int]) -> dict[int, zoneinfo.ZoneInfo]:
    return {pk: zoneinfo.ZoneInfo(tz) for pk, tz in
            Organization.objects.filter(pk__in=set(organization_ids)).values_list("pk", "timezone")}

