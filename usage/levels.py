"""The levels usage is read from: the raw events and the nine rollups, declared once.

Contract
--------
* `LEVELS` runs from the finest (the raw events) to the coarsest; `ROLLUPS` is every level but
  the raw events, in the order ingestion folds them. The query engine tries the levels from the
  coarsest and answers from the first that keeps every dimension the query groups or filters by
  and whose time grid fits the query's range and buckets (usage.query.choose_level); the raw
  events answer anything.
* A level's `time` says what its time column holds: the event's instant (raw), the first UTC
  epoch second of a fixed-width slot, on UTC or on the organization's clock, or the
  organization's local day. `TimeKey.of` works a slot out from an event's instant, for both ways
  of folding (usage/rollups.py), so that every fold agrees with the query engine's grid.
* `dimensions` are what a level keeps besides organization, time and currency, in the order of
  its unique key (`key_columns`, the `ON CONFLICT` target). A `Dimension` says how it is stored
  in rollups and how it reads over raw events.
* `measures` are what each of its rows adds up (usage/measures.py); only levels with
  `histograms` keep the latency histogram.
* Levels and dimensions are named as the engine's public API names them (`usage.query.FINE` is
  `FINE.name`, `UsageQuery.group_by` holds dimension names).
"""

import enum
import functools
import operator
import zoneinfo
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from django.db import models

from usage.measures import MEASURES, Measure, Merge
from usage.models import (
    BUCKET_SECONDS,
    HOUR_SECONDS,
    UsageDaily,
    UsageDepartmentDaily,
    UsageDepartmentKeyDaily,
    UsageEvent,
    UsageFine15,
    UsageHourly,
    UsageKeyDaily,
    UsageModelDaily,
    UsageModelHourly,
    UsageOrganizationDaily,
)
from usage.timebuckets import epoch

__all__ = [
    "DAILY",
    "DEPARTMENT_DAILY",
    "DEPARTMENT_KEY_DAILY",
    "DIMENSIONS",
    "DIMENSION_NAMED",
    "FINE",
    "HOURLY",
    "HOUR_GROUP_DIMENSIONS",
    "KEY_DAILY",
    "LEVELS",
    "LEVEL_NAMED",
    "MODEL_DAILY",
    "MODEL_HOURLY",
    "ORGANIZATION_DAILY",
    "QUARTERS_OF_HOUR",
    "RAW",
    "ROLLUPS",
    "Dimension",
    "Level",
    "TimeKey",
    "TimeKind",
    "is_clean_local_hour",
    "local_hour_of",
]


@dataclass(frozen=True)
class Dimension:
    name: str
    column: str  # in the rollups
    # Its value as SQL over usage_usageevent, as the raw level groups and filters by it.
    event_sql: str
    # The rollup key of one event, in Python (folding stored or rated events).
    of_event: Callable[[Any], Any]
    # The same as SQL over usage_usageevent, where it differs from event_sql.
    rollup_sql: str | None = None
    # What a rollup stores for "none" (a NULL would defeat ON CONFLICT), read back as None.
    none_stored_as: int | None = None

    @property
    def folded_sql(self) -> str:
        return self.rollup_sql or self.event_sql


def _status_class(event: Any) -> int:
    return event.status_code // 100


def _member_or_zero(event: Any) -> int:
    return event.member_id or 0


DIMENSIONS: tuple[Dimension, ...] = (
    Dimension("model", "model_id", "model_id", operator.attrgetter("model_id")),
    Dimension("department", "department_id", "department_id", operator.attrgetter("department_id")),
    Dimension("key", "key_id", "key_id", operator.attrgetter("key_id")),
    Dimension("member", "member_id_or_zero", "member_id", _member_or_zero, rollup_sql="COALESCE(member_id, 0)",
              none_stored_as=0),
    # 2, 3, 4 or 5 for 2xx ... 5xx
    Dimension("status_class", "status_class", "(status_code / 100)", _status_class),
)
DIMENSION_NAMED: dict[str, Dimension] = {dimension.name: dimension for dimension in DIMENSIONS}


class TimeKind(enum.Enum):
    INSTANT = "instant"  # the event's own timestamp
    EPOCH_SLOT = "epoch slot"  # the first UTC epoch second of a fixed-width slot
    LOCAL_DAY = "local day"  # a date on the organization's calendar


@dataclass(frozen=True)
class TimeKey:
    column: str
    kind: TimeKind
    sql_type: str
    # The slot's width; every IANA zone's offset is a multiple of 15 minutes, so local hours and
    # days are exact unions of 15-minute UTC slots.
    seconds: int | None = None
    # Slots follow the organization's clock (its zone), rather than UTC.
    organization_clock: bool = False

    def of(self, epoch_second: int, utc_offset: int, local_day: date) -> int | date:
        """The slot of an event at `epoch_second`, when its organization's clock is `utc_offset`
        seconds ahead of UTC and reads `local_day`."""
        if self.kind is TimeKind.EPOCH_SLOT:
            assert self.seconds is not None
            return epoch_second - (epoch_second + (utc_offset if self.organization_clock else 0)) % self.seconds
        if self.kind is TimeKind.LOCAL_DAY:
            return local_day
        raise ValueError("raw events keep their own instant")

    def bounds(self, start: datetime, end: datetime, zone: zoneinfo.ZoneInfo) -> tuple[Any, Any]:
        """[start, end) as values of this time column (exact when both fall on its grid)."""
        if self.kind is TimeKind.INSTANT:
            return start, end
        if self.kind is TimeKind.LOCAL_DAY:
            return start.astimezone(zone).date(), end.astimezone(zone).date()
        return epoch(start), epoch(end)


INSTANT = TimeKey("timestamp", TimeKind.INSTANT, "timestamp with time zone")
FIFTEEN_MINUTES = TimeKey("bucket", TimeKind.EPOCH_SLOT, "bigint", BUCKET_SECONDS)
# Keyed by the local hour's first UTC epoch second: the UTC hour in whole-hour zones, half past
# it in Kolkata.
LOCAL_HOUR = TimeKey("hour", TimeKind.EPOCH_SLOT, "bigint", HOUR_SECONDS, organization_clock=True)
LOCAL_DAY = TimeKey("day", TimeKind.LOCAL_DAY, "date", organization_clock=True)
# The fine level's 15-minute slots from the start of a local hour. Every zone's offset is a
# multiple of 15 minutes, so a local hour is these four slots, except on a clock that moves by
# half an hour (Australia/Lord_Howe) in the hours around its shift: is_clean_local_hour tells.
QUARTERS_OF_HOUR: tuple[int, ...] = tuple(range(0, HOUR_SECONDS, BUCKET_SECONDS))


def local_hour_of(epoch_second: int, zone: zoneinfo.ZoneInfo) -> int:
    """The local hour (LOCAL_HOUR's slot) an instant falls in on `zone`'s clock."""
    offset = datetime.fromtimestamp(epoch_second, zone).utcoffset()
    return LOCAL_HOUR.of(epoch_second, int(offset.total_seconds()), None)


def is_clean_local_hour(hour: int, zone: zoneinfo.ZoneInfo) -> bool:
    """Whether the local hour starting at `hour` is exactly the four 15-minute slots from it."""
    return all(local_hour_of(hour + quarter, zone) == hour for quarter in QUARTERS_OF_HOUR)


@dataclass(frozen=True)
class Level:
    name: str
    model: type[models.Model]
    time: TimeKey
    dimensions: tuple[str, ...]
    histograms: bool = False

    @property
    def table(self) -> str:
        return self.model._meta.db_table

    @property
    def is_raw(self) -> bool:
        return self.time.kind is TimeKind.INSTANT

    @functools.cached_property
    def measures(self) -> tuple[Measure, ...]:
        return tuple(measure for measure in MEASURES if self.histograms or measure.merge is not Merge.HISTOGRAM)

    @functools.cached_property
    def metric_columns(self) -> tuple[str, ...]:
        return tuple(measure.name for measure in self.measures)

    # A rollup row's key, three ways, each in the order of the unique constraint: its columns, as
    # SQL over the staged events of a batch (which carry each time slot in a column of the time
    # column's name), and read off an event in Python.

    @functools.cached_property
    def key_columns(self) -> tuple[str, ...]:
        return ("organization_id", self.time.column, *(dimension.column for dimension in self._dimensions),
                "currency")

    @functools.cached_property
    def key_sql(self) -> tuple[str, ...]:
        return ("organization_id", self.time.column, *(dimension.folded_sql for dimension in self._dimensions),
                "currency")

    def key_of(self, event: Any, slot: int | date) -> tuple:
        return (event.organization_id, slot, *[dimension.of_event(event) for dimension in self._dimensions],
                event.currency)

    @functools.cached_property
    def _dimensions(self) -> tuple[Dimension, ...]:
        return tuple(DIMENSION_NAMED[name] for name in self.dimensions)

    def keeps(self, dimensions: set[str]) -> bool:
        return dimensions <= set(self.dimensions)

    def dimension_sql(self, name: str) -> str:
        """A dimension as this level groups and filters by it."""
        dimension = DIMENSION_NAMED[name]
        return dimension.event_sql if self.is_raw else dimension.column


# Chosen by measurement at ten million events (bench/RESULTS.md): a level keyed by department
# and model at 15 minutes had nearly as many rows as the raw table, so besides the fine level
# (for drill-downs) the coarse levels drop dimensions instead.
RAW = Level("raw", UsageEvent, INSTANT, tuple(dimension.name for dimension in DIMENSIONS))
FINE = Level("fine", UsageFine15, FIFTEEN_MINUTES, ("department", "key", "model", "member", "status_class"))
HOURLY = Level("hourly", UsageHourly, LOCAL_HOUR, (), histograms=True)
# Usage by model in hours of the organization's clock: Weave's usage buckets of 6 hours (at ten
# million events the fine level's 114,799 rows for 7 days were misestimated, sorted and JIT-compiled).
MODEL_HOURLY = Level("model_hourly", UsageModelHourly, LOCAL_HOUR, ("model",))
# The breakdown's groups per local day, in its order (department, key, member, model): its
# unique index walks a day's groups in the order pages list them.
KEY_DAILY = Level("key_daily", UsageKeyDaily, LOCAL_DAY, ("department", "key", "member", "model"))
# A row of the hourly breakdown: a group of these with events in a local hour (the folds count
# them per hour in usage.models.UsageHourGroups).
HOUR_GROUP_DIMENSIONS: tuple[str, ...] = KEY_DAILY.dimensions
# Per key and day, whatever the member and model: a key's series and totals.
DEPARTMENT_KEY_DAILY = Level("department_key_daily", UsageDepartmentKeyDaily, LOCAL_DAY, ("department", "key"))
DAILY = Level("daily", UsageDaily, LOCAL_DAY, ("department", "model"))
# Daily histograms (measured at ten million events, bench/RESULTS.md): a department's percentiles
# have no hourly histogram to come from, and merging 2,160 hourly histograms in Python was most of
# a 90-day dashboard; a day's histogram per department, and one per organization, answer whole
# days from 30 or 90 rows.
DEPARTMENT_DAILY = Level("department_daily", UsageDepartmentDaily, LOCAL_DAY, ("department",), histograms=True)
MODEL_DAILY = Level("model_daily", UsageModelDaily, LOCAL_DAY, ("model",))
ORGANIZATION_DAILY = Level("organization_daily", UsageOrganizationDaily, LOCAL_DAY, (), histograms=True)

LEVELS: tuple[Level, ...] = (RAW, FINE, MODEL_HOURLY, HOURLY, KEY_DAILY, DEPARTMENT_KEY_DAILY, DAILY,
                             DEPARTMENT_DAILY, MODEL_DAILY, ORGANIZATION_DAILY)
ROLLUPS: tuple[Level, ...] = tuple(level for level in LEVELS if not level.is_raw)
LEVEL_NAMED: dict[str, Level] = {level.name: level for level in LEVELS}
