"""The measures: every number a rollup row keeps, declared once (as Zulip's analytics declare
each `CountStat` once and derive the rest).

Contract
--------
* `MEASURES` lists them in the order rows and statements list them. A measure's `name` is at
  once its rollup column (usage.models.RollupMetrics, and UsageHourly for the histogram), its
  attribute on the query engine's rows (usage.query.Row) and its name in `UsageQuery.sums`.
  tests/usage/test_measures.py fails when a model's fields and this registry drift apart.
* `event_sql` is one event's value as SQL over `usage_usageevent`; `of_event` is the same value
  read off a stored or rated event in Python. Rollups are folded in SQL on PostgreSQL ingestion
  and in Python everywhere else, and tests/usage/test_rollup_properties.py checks that the two
  leave every level the same.
* `merge` says how values combine: added up, the smallest, the largest, or counted into the
  latency histogram's bins (usage/histogram.py). How each merge reads in SQL is written once
  here: over raw events (`over_events`), over stored rollup rows (`over_rollups`), and a stored
  row meeting a new one in `ON CONFLICT DO UPDATE` (`Merge.on_conflict`).
* A money measure's event value is an amount of 8 places; rollups store and add it as whole
  1e-8 currency units (billing.money.to_units), so that every level adds up exactly on both
  databases, and `amount_name` names its Decimal reading on rows (`cost_units` reads as `cost`).
* `EVENT_VALUES` are the per-event values a query can summarize beyond the sums (usage.query's
  `distributions` and `true_counts`): each names its SQL over usage_usageevent, the row reading
  that adds it up, and, for a value that is 0 or 1 per event, the measure that already counts its
  non-zero events, so that those counts come from rollups rather than raw events.
* Plain declarations: nothing here touches a database. The SQL is portable text over lowercase
  column names, and what differs between PostgreSQL and SQLite is chosen by `vendor` (Django's
  `connection.vendor`).
"""

import enum
import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from billing.money import UNITS_PER_CURRENCY_UNIT, to_units
from usage import histogram

__all__ = [
    "EVENT_VALUES",
    "EVENT_VALUE_NAMED",
    "MEASURES",
    "MEASURE_NAMED",
    "ROW_MEASURES",
    "SUMMED",
    "EventValue",
    "Measure",
    "Merge",
]


class Merge(enum.Enum):
    SUM = "sum"
    MIN = "min"
    MAX = "max"
    HISTOGRAM = "histogram"  # cumulative counts per latency bin (usage/histogram.py)

    def on_conflict(self, stored: str, new: str, vendor: str) -> str:
        """SQL for a stored rollup value meeting a new one (`ON CONFLICT DO UPDATE`)."""
        sqlite = vendor == "sqlite"
        if self is Merge.SUM:
            return f"{stored} + {new}"
        if self is Merge.MIN:
            return f"{'MIN' if sqlite else 'LEAST'}({stored}, {new})"
        if self is Merge.MAX:
            return f"{'MAX' if sqlite else 'GREATEST'}({stored}, {new})"
        # A SQL function of ours: a migration creates it on PostgreSQL, usage/apps.py registers
        # it on SQLite connections.
        return f"usage_bins_add({stored}, {new})"

    @property
    def add(self) -> Callable[[Any, Any], Any]:
        """Two values merged in Python (histograms in their stored encoding)."""
        return _ADD[self]

    def combine(self, total: Any, value: Any) -> Any:
        """Two values merged in Python, where None (no events) gives way to the other."""
        if total is None:
            return value
        if value is None:
            return total
        return _ADD[self](total, value)


_ADD: dict[Merge, Callable[[Any, Any], Any]] = {
    Merge.SUM: operator.add, Merge.MIN: min, Merge.MAX: max, Merge.HISTOGRAM: histogram.add}
# Merges SQL has an aggregate function for, by that function's name.
_AGGREGATE = {Merge.SUM: "SUM", Merge.MIN: "MIN", Merge.MAX: "MAX"}


@dataclass(frozen=True)
class Measure:
    name: str
    # One event's value as SQL over usage_usageevent (for a histogram: the value it bins).
    event_sql: str
    merge: Merge = Merge.SUM
    money: bool = False
    # The aggregate over raw events, where it is not the merge's function of event_sql.
    aggregate_sql: str | None = None
    # One event's value in Python; by default its attribute named event_sql, in 1e-8 units for
    # money and as a bin index for a histogram.
    of_event: Callable[[Any], Any] = field(default=None)  # type: ignore[assignment]
    description: str = ""

    def __post_init__(self) -> None:
        if self.of_event is None:
            read = operator.attrgetter(self.event_sql)
            if self.money:
                object.__setattr__(self, "of_event", lambda event: to_units(read(event)))
            elif self.merge is Merge.HISTOGRAM:
                object.__setattr__(self, "of_event", lambda event: histogram.bin_of(read(event)))
            else:
                object.__setattr__(self, "of_event", read)

    @property
    def amount_name(self) -> str | None:
        """The name of a money measure's Decimal reading."""
        return self.name.removesuffix("_units") if self.money else None

    @property
    def empty(self) -> int | None:
        """Its value over no events: nothing added up is 0, but there is no smallest latency."""
        return 0 if self.merge is Merge.SUM else None

    def over_events(self, vendor: str) -> str:
        """SQL aggregating raw events into this measure (money in whole 1e-8 units)."""
        if self.aggregate_sql is not None:
            return self.aggregate_sql
        if self.merge is Merge.HISTOGRAM:
            # Bins are worked out in Python (histogram.bin_of): SQL's floating point may put a
            # value at an exact power of γ one bin off.
            raise ValueError(f"{self.name} is binned in Python, not aggregated over events in SQL")
        units = int(UNITS_PER_CURRENCY_UNIT)
        if self.money and vendor == "postgresql":
            return f"CAST(SUM({self.event_sql}) * {units} AS BIGINT)"
        if self.money:
            # SQLite keeps decimals as binary floats: round each event back to whole units first.
            return f"SUM(CAST(ROUND({self.event_sql} * {units}) AS INTEGER))"
        return f"{_AGGREGATE[self.merge]}({self.event_sql})"

    def over_rollups(self) -> str:
        """SQL aggregating stored rollup rows into this measure."""
        if self.merge is Merge.SUM:
            # SUM of a bigint is a numeric on PostgreSQL, slow to add and to hand to Python as Decimal.
            return f"CAST(SUM({self.name}) AS BIGINT)"
        if self.merge is Merge.HISTOGRAM:
            raise ValueError(f"{self.name} is read per stored row, never aggregated in SQL")
        return f"{_AGGREGATE[self.merge]}({self.name})"


def _failed(event: Any) -> int:
    return 1 if event.status_code >= 400 else 0


MEASURES: tuple[Measure, ...] = (
    Measure("requests", "1", aggregate_sql="COUNT(*)", of_event=lambda event: 1),
    Measure("errors", "CASE WHEN status_code >= 400 THEN 1 ELSE 0 END", of_event=_failed,
            description="requests answered with a 4xx or 5xx status"),
    Measure("prompt_tokens", "prompt_tokens"),
    Measure("completion_tokens", "completion_tokens"),
    Measure("cached_tokens", "cached_tokens"),
    Measure("cache_creation_tokens", "cache_creation_tokens"),
    Measure("image_count", "image_count"),
    Measure("video_seconds", "video_seconds"),
    Measure("input_chars", "input_chars"),
    Measure("output_chars", "output_chars"),
    Measure("cost_units", "cost", money=True),
    Measure("latency_sum_ms", "latency_ms"),
    Measure("input_cost_units", "input_cost", money=True,
            description="The cost of prompt tokens neither read from nor written to a cache."),
    Measure("cache_read_cost_units", "cache_read_cost", money=True),
    Measure("cache_write_cost_units", "cache_write_cost", money=True),
    Measure("output_cost_units", "output_cost", money=True),
    Measure("latency_min_ms", "latency_ms", Merge.MIN),
    Measure("latency_max_ms", "latency_ms", Merge.MAX),
    Measure("latency_bins", "latency_ms", Merge.HISTOGRAM),
)
MEASURE_NAMED: dict[str, Measure] = {measure.name: measure for measure in MEASURES}
SUMMED: tuple[Measure, ...] = tuple(measure for measure in MEASURES if measure.merge is Merge.SUM)
# What the query engine's rows carry as plain numbers (histograms become percentiles there).
ROW_MEASURES: tuple[Measure, ...] = tuple(measure for measure in MEASURES if measure.merge is not Merge.HISTOGRAM)


@dataclass(frozen=True)
class EventValue:
    """A per-event value: its smallest, largest and percentiles over a row's events, and how many
    of those events have it non-zero (Weave's `count_true`; the rest, its `count_false`)."""

    name: str
    event_sql: str  # one event's value as SQL over usage_usageevent
    total: str  # the attribute of usage.query.Row that adds it up over the row's events
    money: bool = False  # an amount of 8 places (read back as a Decimal)
    # For a value that is 0 or 1 per event, the measure that adds it up counts exactly the events
    # where it is non-zero: those counts are then read off rollups instead of raw events.
    counted_by: str | None = None


EVENT_VALUES: tuple[EventValue, ...] = (
    EventValue("prompt_tokens", "prompt_tokens", "prompt_tokens"),
    EventValue("completion_tokens", "completion_tokens", "completion_tokens"),
    EventValue("total_tokens", "prompt_tokens + completion_tokens", "total_tokens"),
    EventValue("cached_tokens", "cached_tokens", "cached_tokens"),
    EventValue("cache_creation_tokens", "cache_creation_tokens", "cache_creation_tokens"),
    # Every prompt token's cost, whether uncached, read from a cache or written to one.
    EventValue("input_cost", "input_cost + cache_read_cost + cache_write_cost", "prompt_cost", money=True),
    EventValue("output_cost", "output_cost", "output_cost", money=True),
    EventValue("cost", "cost", "cost", money=True),
    EventValue("latency_ms", "latency_ms", "latency_sum_ms"),
    EventValue("errors", MEASURE_NAMED["errors"].event_sql, "errors", counted_by="errors"),
    EventValue("requests", "1", "requests", counted_by="requests"),
)
EVENT_VALUE_NAMED: dict[str, EventValue] = {value.name: value for value in EVENT_VALUES}
