"""Reads around the query engine that every dialect needs: the objects a request names (found
only inside the caller's organization), names for the ids the engine's rows carry, data freshness,
the per-minute peak, and the keyset export of raw events.

Aggregates come from `usage.query` alone; these are lookups and row-level reads."""

import zoneinfo
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db.models import Count, F, Max, Sum
from django.db.models.fields.tuple_lookups import Tuple, TupleGreaterThan, TupleLessThan
from django.db.models.functions import TruncMinute

from billing.models import Model
from keys.models import InferenceKey
from portal.models import Department, Member, Organization
from usage import activity
from usage.models import HOUR_SECONDS, UsageEvent, UsageFillState, UsageHourly

# --- names for the ids in the engine's rows --------------------------------------------------

_NAMED = {
    "department": lambda ids: Department.objects.filter(pk__in=ids),
    "key": lambda ids: InferenceKey.objects.filter(pk__in=ids),
    "member": lambda ids: Member.objects.filter(pk__in=ids).select_related("user"),
    "model": lambda ids: Model.objects.filter(pk__in=ids),
}


def objects_named_in(rows: Iterable[Any], *groups: str) -> dict[str, dict[int, Any]]:
    """For each group (department, key, member, model), the objects behind the ids that appear in
    `rows` (engine rows), by id: one query per group, however many rows."""
    rows = list(rows)
    named: dict[str, dict[int, Any]] = {}
    for group in groups:
        ids = {row.group.get(group) for row in rows} - {None}
        named[group] = {obj.pk: obj for obj in _NAMED[group](ids)} if ids else {}
    return named


def model_codes() -> dict[int, str]:
    """Every model's code by id (the catalog is small; dialects name models by code)."""
    return dict(Model.objects.values_list("pk", "code"))


# --- freshness and peaks -----------------------------------------------------------------------

def data_freshness(organization_id: int, end: datetime) -> datetime | None:
    """The newest event before `end`: from the fill state, or, if some event is stamped later
    (a gateway clock ahead), the newest raw event inside the range."""
    newest = UsageFillState.objects.filter(organization_id=organization_id).values_list(
        "newest_event_at", flat=True).first()
    if newest is None or newest < end:
        return newest
    return (UsageEvent.objects.filter(organization_id=organization_id, timestamp__lt=end)
            .order_by("-timestamp").values_list("timestamp", flat=True).first())


def peak_requests_per_minute(organization_id: int, start: datetime, end: datetime, *,
                             departments: Sequence[int] = (), zone: zoneinfo.ZoneInfo | None = None) -> int:
    """The most requests in any one clock minute (UTC) of [start, end); of the given departments
    only, if any are given. From the hourly peaks (usage/activity.py) when the range is whole
    hours of the organization's clock (`zone`, looked up if not given) and at most one department
    is named; else from raw events."""
    if len(departments) <= 1:
        if zone is None:
            zone = zoneinfo.ZoneInfo(Organization.objects.values_list("timezone", flat=True).get(pk=organization_id))
        peak = activity.peak_requests(organization_id, start, end, zone,
                                      scope=departments[0] if departments else activity.ORGANIZATION)
        if peak is not None:
            return peak
    events = UsageEvent.objects.filter(organization_id=organization_id, timestamp__gte=start, timestamp__lt=end)
    if departments:
        events = events.filter(department_id__in=departments)
    per_minute = (events.annotate(minute=TruncMinute("timestamp", tzinfo=UTC)).values("minute")
                  .annotate(requests=Count("id")))
    return per_minute.aggregate(peak=Max("requests"))["peak"] or 0


# --- event export (keyset paging) -----------------------------------------------------------

@dataclass(frozen=True)
class EventPage:
    events: list[UsageEvent]
    # (timestamp, id) of the last event, to pass as `after` for the next page; None at the end.
    next_after: tuple[datetime, int] | None


def events_in(organization_id: int, start: datetime, end: datetime, *, descending: bool = False,
              after: tuple[datetime, int] | None = None):
    """The raw events of [start, end) in (timestamp, id) order, strictly after `after` if given.

    `after` is a row-value comparison, `("timestamp", "id") > (%s, %s)`: one index range on
    (organization, timestamp, id), where the equivalent OR of two conditions makes PostgreSQL
    filter instead of seek. Django's tuple lookups (written for composite primary keys) say it
    without raw SQL."""
    events = UsageEvent.objects.filter(organization_id=organization_id, timestamp__gte=start, timestamp__lt=end)
    if after is not None:
        compare = TupleLessThan if descending else TupleGreaterThan
        events = events.filter(compare(Tuple(F("timestamp"), F("id")), after))
    return events.order_by(*(("-timestamp", "-id") if descending else ("timestamp", "id")))


def export_events(organization_id: int, start: datetime, end: datetime, *, limit: int,
                  after: tuple[datetime, int] | None = None, descending: bool = False,
                  related: Sequence[str] = ()) -> EventPage:
    """A page of raw events continuing strictly after `after` (keyset paging: a page a million
    rows deep costs what the first page costs; no OFFSET)."""
    events = events_in(organization_id, start, end, descending=descending, after=after)
    page = list(events.select_related(*related)[: limit + 1]) if related else list(events[: limit + 1])
    more = len(page) > limit
    page = page[:limit]
    return EventPage(page, (page[-1].timestamp, page[-1].pk) if more and page else None)


# --- positions in the event walk (page numbers without OFFSET) ----------------------------------

class Stretch:
    """[start, end) and how many events it holds; whole hours keep their bounds as epoch
    seconds until asked (a 90-day range has 2,160 of them)."""

    __slots__ = ("_start", "_end", "events")

    def __init__(self, start: datetime | int, end: datetime | int, events: int) -> None:
        self._start, self._end, self.events = start, end, events

    @property
    def start(self) -> datetime:
        return _instant(self._start) if isinstance(self._start, int) else self._start

    @property
    def end(self) -> datetime:
        return _instant(self._end) if isinstance(self._end, int) else self._end


class EventTimeline:
    """How many events an organization has in each stretch of [start, end): the whole hours from
    the hourly rollup (one row per hour of the organization's clock: an hour keyed h holds exactly
    the events of [h, h + 3600)), the parts of an hour at either end counted on the raw events'
    (organization, timestamp, id) index. It answers how many events a range holds, how many come
    before an instant, and which event stands at a given place of the walk, each reading at most
    one hour of raw index entries: a page number maps to a keyset position without OFFSET.

    Exact as long as every stored event is in the hourly rollup, which ingestion folds in the
    same transaction as the events."""

    def __init__(self, organization_id: int, start: datetime, end: datetime) -> None:
        self.organization_id, self.start, self.end = organization_id, start, end
        self.stretches = self._stretches()
        self.total = sum(stretch.events for stretch in self.stretches)

    def _raw_count(self, start: datetime, end: datetime) -> int:
        if start >= end:
            return 0
        return events_in(self.organization_id, start, end).count()

    def _stretches(self) -> list[Stretch]:
        first, last = int(self.start.timestamp()) - HOUR_SECONDS, int(self.end.timestamp())
        hours = list(UsageHourly.objects.filter(organization_id=self.organization_id, hour__gte=first, hour__lt=last)
                     .values("hour").annotate(events=Sum("requests")).order_by("hour")
                     .values_list("hour", "events"))
        if not hours:
            return []
        phase = hours[0][0] % HOUR_SECONDS
        if any(hour % HOUR_SECONDS != phase for hour, _ in hours):
            # The zone moved its hours by less than an hour in the range (Lord Howe Island's
            # half-hour DST): stored hours overlap, so count the raw events instead.
            return [Stretch(self.start, self.end, self._raw_count(self.start, self.end))]
        # The first and the last hour of the organization's clock wholly inside the range.
        whole_from = phase + -(-(int(self.start.timestamp()) - phase) // HOUR_SECONDS) * HOUR_SECONDS
        if _instant(whole_from) < self.start:
            whole_from += HOUR_SECONDS
        whole_to = phase + (int(self.end.timestamp()) - phase) // HOUR_SECONDS * HOUR_SECONDS
        if whole_from >= whole_to:
            return [Stretch(self.start, self.end, self._raw_count(self.start, self.end))]
        head, tail = (self.start, _instant(whole_from)), (_instant(whole_to), self.end)
        stretches = [Stretch(*head, self._raw_count(*head))]
        stretches += [Stretch(hour, hour + HOUR_SECONDS, int(events)) for hour, events in hours
                      if whole_from <= hour < whole_to]
        stretches.append(Stretch(*tail, self._raw_count(*tail)))
        return [stretch for stretch in stretches if stretch.events]

    def before(self, moment: datetime) -> int:
        """How many events of the range are stamped before `moment`."""
        count = 0
        for stretch in self.stretches:
            end = stretch.end
            if end <= moment:
                count += stretch.events
            elif stretch.start < moment:
                count += self._raw_count(stretch.start, moment)
            else:
                break
        return count

    def after(self, moment: datetime) -> int:
        """How many events of the range are stamped after `moment`."""
        return self.total - self.before(moment) - self._raw_count(moment, moment + timedelta(microseconds=1))

    def position(self, index: int) -> tuple[datetime, int] | None:
        """(timestamp, id) of the event at `index` (from 0) of the range in (timestamp, id) order,
        None past the end: the stretch it falls in is found on the counts, and only that
        stretch's index entries are read, up to the one wanted."""
        if index < 0:
            return None
        for stretch in self.stretches:
            if index < stretch.events:
                keys = events_in(self.organization_id, stretch.start, stretch.end).values_list("timestamp", "id")
                return list(keys[: index + 1])[-1]
            index -= stretch.events
        return None


def _instant(epoch_second: int) -> datetime:
    return datetime.fromtimestamp(epoch_second, tz=UTC)
