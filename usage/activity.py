"""Distinct conversations and per-minute peaks, kept exactly beside the rollup levels.

Neither is a sum over a batch's events, so neither is a level of usage/levels.py; both are kept
per department and (department 0, `ORGANIZATION`) for the whole organization, folded with the
levels (after the ingest commit, usage/folding.py) and read by the query engine (conversations)
and usage.selectors (peaks).

Distinct conversations (API.md §1: a conversation id, or, without one, the request alone)
-----------------------------------------------------------------------------------------
`UsageConversation` keeps each conversation id's last active local day; `UsageConversationDaily`
counts, per local day, the conversations whose last active day it is, plus that day's requests
without a conversation id. A conversation is active in [D1, D2) exactly when its last active day
is in it, provided it has no activity on or after D2; so when the organization has no event at or
after the range's end (the fill state's newest event, read in the same statement), the sum of
the range's daily counts IS the distinct count: exact, and read from at most one row per day. A
range with later events (a past range, a gateway clock ahead) is not answered here: the engine
counts it over raw events. Folding moves a conversation's count from the day it was last seen
to its new last day; the upsert's row lock orders concurrent batches, and each sees the last
day the one before it left (`previous_day`), so the moves add up in any order.

Peak requests per minute
------------------------
`UsagePeakHourly` keeps, per hour of the organization's clock (keyed as UsageHourly), the most
requests in one UTC minute of it. A minute's count is only known once every batch that adds to
it is counted, so it is recounted from raw events after the fold statement, in a new snapshot,
for the minutes the batch touched; the fold statement first locks the organization's rows of
those hours, so a concurrent fold on the same hours recounts after this one commits and sees
its events. The recount reads raw events, so it also counts events committed but not yet folded:
never too many, as each is in the raw table for good. GREATEST keeps the largest recount: exact,
as counts only grow.
"""

import zoneinfo
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

from django.db import connection

from usage.bulk import column_types, write_rows
from usage.levels import LOCAL_DAY, LOCAL_HOUR
from usage.models import UsageConversation, UsageConversationDaily, UsageEvent, UsageFillState, UsagePeakHourly
from usage.timebuckets import epoch

__all__ = ["ORGANIZATION", "conversations", "fold_events", "fold_sql", "peak_requests", "recount_peaks_sql"]

ORGANIZATION = 0  # department_id_or_zero of the rows that cover the whole organization
_SCOPE = "department_id_or_zero"
_CONVERSATION_KEY = ("organization_id", _SCOPE, "conversation_id")
_DAILY_KEY = ("organization_id", _SCOPE, LOCAL_DAY.column)
_PEAK_KEY = ("organization_id", _SCOPE, LOCAL_HOUR.column)
_EVENTS = UsageEvent._meta.db_table
_CONVERSATIONS = UsageConversation._meta.db_table
_DAILY = UsageConversationDaily._meta.db_table
_PEAKS = UsagePeakHourly._meta.db_table
MODELS = (UsageConversation, UsageConversationDaily, UsagePeakHourly)


def _q(name: str) -> str:
    return connection.ops.quote_name(name)


def _columns(names: Iterable[str]) -> str:
    return ", ".join(_q(name) for name in names)


def _greatest(left: str, right: str) -> str:
    return f"{'MAX' if connection.vendor == 'sqlite' else 'GREATEST'}({left}, {right})"


def _conversation_conflict() -> str:
    stored = f"{_q(_CONVERSATIONS)}.{_q('last_day')}"
    return (f"({_columns(_CONVERSATION_KEY)}) DO UPDATE SET {_q('last_day')} = "
            f"{_greatest(stored, 'EXCLUDED.' + _q('last_day'))}, {_q('previous_day')} = {stored}")


def _daily_conflict() -> str:
    return (f"({_columns(_DAILY_KEY)}) DO UPDATE SET {_q('conversations')} = "
            f"{_q(_DAILY)}.{_q('conversations')} + EXCLUDED.{_q('conversations')}")


def _peak_conflict(merge: bool) -> str:
    stored = f"{_q(_PEAKS)}.{_q('peak_requests')}"
    value = _greatest(stored, "EXCLUDED." + _q("peak_requests")) if merge else stored
    return f"({_columns(_PEAK_KEY)}) DO UPDATE SET {_q('peak_requests')} = {value}"


# --- PostgreSQL: parts of the fold statement and the recount after it --------------------------

def fold_sql() -> list[str]:
    """CTEs for usage.rollups' fold statement, over its `new` (the batch's newly stored events,
    with their local `day` and `hour` slots): move each conversation to its last day, count the
    requests without one, and lock the organization's peak row of every hour the batch touches."""
    day, hour = _q(LOCAL_DAY.column), _q(LOCAL_HOUR.column)
    return [
        f"""activity_conversations AS (
        INSERT INTO {_q(_CONVERSATIONS)} ({_columns((*_CONVERSATION_KEY, "last_day"))})
        SELECT organization_id, scope, conversation_id, MAX({day}) FROM (
            SELECT organization_id, department_id AS scope, conversation_id, {day} FROM new
            WHERE conversation_id IS NOT NULL
            UNION ALL
            SELECT organization_id, {ORGANIZATION}, conversation_id, {day} FROM new WHERE conversation_id IS NOT NULL
        ) AS scoped GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
        ON CONFLICT {_conversation_conflict()}
        RETURNING organization_id, {_SCOPE}, last_day, previous_day
    )""",
        f"""activity_conversation_days AS (
        INSERT INTO {_q(_DAILY)} ({_columns((*_DAILY_KEY, "conversations"))})
        SELECT organization_id, scope, {day}, SUM(delta) FROM (
            SELECT organization_id, {_SCOPE} AS scope, last_day AS {day}, 1 AS delta FROM activity_conversations
            WHERE previous_day IS NULL OR previous_day < last_day
            UNION ALL
            SELECT organization_id, {_SCOPE}, previous_day, -1 FROM activity_conversations
            WHERE previous_day < last_day
            UNION ALL
            SELECT organization_id, department_id, {day}, COUNT(*) FROM new WHERE conversation_id IS NULL
            GROUP BY 1, 2, 3
            UNION ALL
            SELECT organization_id, {ORGANIZATION}, {day}, COUNT(*) FROM new WHERE conversation_id IS NULL
            GROUP BY 1, 3
        ) AS deltas GROUP BY 1, 2, 3 HAVING SUM(delta) <> 0 ORDER BY 1, 2, 3
        ON CONFLICT {_daily_conflict()}
    )""",
        f"""activity_peak_locks AS (
        INSERT INTO {_q(_PEAKS)} ({_columns((*_PEAK_KEY, "peak_requests"))})
        SELECT DISTINCT organization_id, {ORGANIZATION}, {hour}, 0 FROM new ORDER BY 1, 2, 3
        ON CONFLICT {_peak_conflict(merge=False)}
    )""",
    ]


def recount_peaks_sql(staging: str) -> str:
    """The statement after the fold: each minute the staged batch touched, recounted over raw
    events per department and in total, raised into its hour's peaks.

    Each minute is counted in a LATERAL subquery, so it is one (organization, time) index range
    per minute whatever the planner thinks of the table: written as a plain join, PostgreSQL
    (stale row estimates on a growing table, and the index's correlation taken from its first
    column) hash-joined the whole raw table for every batch, 1.2 s a batch at 1.3 M events and
    growing with the table, against 4.6 ms this way (EXPLAIN ANALYZE, bench/RESULTS.md)."""
    hour = _q(LOCAL_HOUR.column)
    return f"""
    WITH minutes AS (
        SELECT DISTINCT organization_id, {hour}, date_trunc('minute', "timestamp") AS minute FROM {_q(staging)}
    ),
    counts AS (
        SELECT m.organization_id, m.{hour}, m.minute, c.department_id, c.n
        FROM minutes AS m CROSS JOIN LATERAL (
            SELECT e.department_id, COUNT(*) AS n FROM {_q(_EVENTS)} AS e
            WHERE e.organization_id = m.organization_id
                AND e."timestamp" >= m.minute AND e."timestamp" < m.minute + INTERVAL '1 minute'
            GROUP BY e.department_id
        ) AS c
    )
    INSERT INTO {_q(_PEAKS)} ({_columns((*_PEAK_KEY, "peak_requests"))})
    SELECT organization_id, scope, {hour}, MAX(n) FROM (
        SELECT organization_id, department_id AS scope, {hour}, n FROM counts
        UNION ALL
        SELECT organization_id, {ORGANIZATION}, {hour}, SUM(n) FROM counts GROUP BY organization_id, {hour}, minute
    ) AS per_minute GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
    ON CONFLICT {_peak_conflict(merge=True)}"""


# --- Python: SQLite ingestion and every rebuild ------------------------------------------------

def _as_date(value: Any) -> date | None:
    return date.fromisoformat(value) if isinstance(value, str) else value


def _write(model, columns: Sequence[str], rows: list[list[Any]], conflict: str, returning: str | None = None):
    if connection.vendor == "sqlite":
        fields = [model._meta.get_field(column) for column in columns]
        rows = [[field.get_db_prep_value(value, connection) for field, value in zip(fields, row, strict=True)]
                for row in rows]
    return write_rows(model._meta.db_table, columns, column_types(model, columns), rows, conflict=conflict,
                      returning=returning)


def fold_events(events: Sequence[Any], zones: dict[int, zoneinfo.ZoneInfo]) -> None:
    """Fold stored events (already in the raw table) into conversations and peaks: SQLite
    ingestion, and full rebuilds on either database (usage.rollups.fold_events)."""
    last_days: dict[tuple, date] = {}
    singles: Counter = Counter()
    minutes: dict[tuple[int, int], set[datetime]] = defaultdict(set)  # (organization, hour) -> minutes
    for event in events:
        zone = zones[event.organization_id]
        local = event.timestamp.astimezone(zone)
        day = local.date()
        for scope in (event.department_id, ORGANIZATION):
            if event.conversation_id is None:
                singles[(event.organization_id, scope, day)] += 1
            else:
                key = (event.organization_id, scope, event.conversation_id)
                last_days[key] = max(last_days.get(key, day), day)
        second = int(event.timestamp.timestamp())
        hour = LOCAL_HOUR.of(second, int(local.utcoffset().total_seconds()), day)
        minutes[(event.organization_id, hour)].add(datetime.fromtimestamp(second - second % 60, UTC))
    deltas = Counter(singles)
    returned = _write(UsageConversation, (*_CONVERSATION_KEY, "last_day"),
                      [[*key, day] for key, day in sorted(last_days.items())], _conversation_conflict(),
                      returning=f"organization_id, {_SCOPE}, last_day, previous_day")
    for organization_id, scope, last, previous in returned:
        last, previous = _as_date(last), _as_date(previous)
        if previous is None or previous < last:
            deltas[(organization_id, scope, last)] += 1
        if previous is not None and previous < last:
            deltas[(organization_id, scope, previous)] -= 1
    _write(UsageConversationDaily, (*_DAILY_KEY, "conversations"),
           [[*key, delta] for key, delta in sorted(deltas.items()) if delta], _daily_conflict())
    _write(UsagePeakHourly, (*_PEAK_KEY, "peak_requests"), _recounted_peaks(minutes), _peak_conflict(merge=True))


def _recounted_peaks(minutes: dict[tuple[int, int], set[datetime]]) -> list[list[Any]]:
    peaks: dict[tuple, int] = {}
    for (organization_id, hour), touched in minutes.items():
        for first, last in _spans(sorted(touched)):
            per_minute: Counter = Counter()
            for moment, department_id in UsageEvent.objects.filter(
                    organization_id=organization_id, timestamp__gte=first,
                    timestamp__lt=last + timedelta(minutes=1)).values_list("timestamp", "department_id"):
                minute = int(moment.timestamp()) // 60
                per_minute[(minute, department_id)] += 1
                per_minute[(minute, ORGANIZATION)] += 1
            for (_minute, scope), count in per_minute.items():
                key = (organization_id, scope, hour)
                peaks[key] = max(peaks.get(key, 0), count)
    return [[*key, peak] for key, peak in sorted(peaks.items())]


def _spans(minutes: list[datetime]) -> Iterable[tuple[datetime, datetime]]:
    """Runs of consecutive minutes, as (first, last)."""
    first = previous = minutes[0]
    for minute in minutes[1:]:
        if minute - previous > timedelta(minutes=1):
            yield first, previous
            first = minute
        previous = minute
    yield first, previous


# --- reads -------------------------------------------------------------------------------------

def conversations(organization_id: int, start: datetime, end: datetime, zone: zoneinfo.ZoneInfo, *,
                  scopes: Sequence[int] | None) -> dict[int, int] | None:
    """Distinct conversations of [start, end) (whole local days of the organization's clock) per
    scope (a department id, or ORGANIZATION; every department's when `scopes` is None), or None
    when an event of the organization lies at or after `end` and the counts cannot tell (read
    over raw events then)."""
    first, last = LOCAL_DAY.bounds(start, end, zone)
    day_field = UsageConversationDaily._meta.get_field(LOCAL_DAY.column)
    params = [organization_id, organization_id, *(scopes or ()), day_field.get_db_prep_value(first, connection),
              day_field.get_db_prep_value(last, connection)]
    scoped = (f"{_SCOPE} IN ({', '.join(['%s'] * len(scopes))})" if scopes is not None
              else f"{_SCOPE} <> {ORGANIZATION}")
    sql = (f"SELECT state.newest_event_at, counts.scope, counts.n FROM (SELECT 1 AS one) AS one "
           f"LEFT JOIN {_q(UsageFillState._meta.db_table)} AS state ON state.organization_id = %s "
           f"LEFT JOIN (SELECT {_SCOPE} AS scope, CAST(SUM(conversations) AS BIGINT) AS n FROM {_q(_DAILY)} "
           f"WHERE organization_id = %s AND {scoped} "
           f"AND {_q(LOCAL_DAY.column)} >= %s AND {_q(LOCAL_DAY.column)} < %s GROUP BY {_SCOPE}) AS counts ON 1 = 1")
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        records = cursor.fetchall()
    newest = records[0][0]
    if isinstance(newest, str):
        newest = datetime.fromisoformat(newest)
    if newest is not None and newest.tzinfo is None:
        newest = newest.replace(tzinfo=UTC)
    if newest is not None and newest >= end:
        return None
    return {int(scope): int(count) for _newest, scope, count in records if scope is not None}


def peak_requests(organization_id: int, start: datetime, end: datetime, zone: zoneinfo.ZoneInfo, *,
                  scope: int) -> int | None:
    """The most requests in one UTC minute of [start, end) for one scope, or None when the range
    is not whole hours of the organization's clock (read over raw events then)."""
    assert LOCAL_HOUR.seconds is not None
    for moment in (start, end):
        local = moment.astimezone(zone)
        if local.microsecond or (local.minute * 60 + local.second) % LOCAL_HOUR.seconds:
            return None
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT MAX(peak_requests) FROM {_q(_PEAKS)} WHERE organization_id = %s AND {_SCOPE} = %s "
                       f"AND {_q(LOCAL_HOUR.column)} >= %s AND {_q(LOCAL_HOUR.column)} < %s",
                       [organization_id, scope, epoch(start), epoch(end)])
        (peak,) = cursor.fetchone()
    return int(peak or 0)


# --- backfill (migration 0007) -------------------------------------------------------------------

def backfill_postgresql(cursor) -> None:
    """Fill the three tables from raw events in three set-based statements (PostgreSQL); local
    days and hours on each organization's clock, as the folds compute them."""
    local = ("(SELECT e.*, CAST(e.\"timestamp\" AT TIME ZONE o.timezone AS date) AS day, "
             "CAST(FLOOR(date_part('epoch', e.\"timestamp\")) AS BIGINT) AS second, "
             "CAST(date_part('epoch', e.\"timestamp\" AT TIME ZONE o.timezone) "
             "- date_part('epoch', e.\"timestamp\" AT TIME ZONE 'UTC') AS BIGINT) AS utc_offset "
             f"FROM {_q(_EVENTS)} AS e JOIN portal_organization AS o ON o.id = e.organization_id) AS ev")
    cursor.execute(f"""
        INSERT INTO {_q(_CONVERSATIONS)} ({_columns((*_CONVERSATION_KEY, "last_day"))})
        SELECT organization_id, COALESCE(scope, {ORGANIZATION}), conversation_id, MAX(day) FROM (
            SELECT organization_id, department_id AS scope, conversation_id, day FROM {local}
            WHERE conversation_id IS NOT NULL) AS scoped
        GROUP BY GROUPING SETS ((organization_id, scope, conversation_id), (organization_id, conversation_id))""")
    cursor.execute(f"""
        INSERT INTO {_q(_DAILY)} ({_columns((*_DAILY_KEY, "conversations"))})
        SELECT organization_id, scope, day, SUM(n) FROM (
            SELECT organization_id, {_SCOPE} AS scope, last_day AS day, COUNT(*) AS n FROM {_q(_CONVERSATIONS)}
            GROUP BY 1, 2, 3
            UNION ALL
            SELECT organization_id, COALESCE(department_id, {ORGANIZATION}), day, COUNT(*) FROM {local}
            WHERE conversation_id IS NULL GROUP BY GROUPING SETS ((organization_id, department_id, day),
                                                                  (organization_id, day))
        ) AS counts GROUP BY 1, 2, 3""")
    cursor.execute(f"""
        INSERT INTO {_q(_PEAKS)} ({_columns((*_PEAK_KEY, "peak_requests"))})
        SELECT organization_id, COALESCE(department_id, {ORGANIZATION}), hour, MAX(n) FROM (
            SELECT organization_id, department_id, minute, hour, COUNT(*) AS n FROM (
                SELECT organization_id, department_id, second / 60 AS minute,
                       second - (second + utc_offset) % 3600 AS hour FROM {local}) AS minutes
            GROUP BY GROUPING SETS ((organization_id, department_id, minute, hour), (organization_id, minute, hour))
        ) AS per_minute GROUP BY 1, 2, 3""")
