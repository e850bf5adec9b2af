"""Reads around the query engine that every dialect needs: the objects a request names (found
only inside the caller's organization), names for the ids the engine's rows carry, data freshness,
the per-minute peak, and the keyset export of raw events.

Aggregates come from `usage.query` alone; these are lookups and row-level reads."""

import zoneinfo
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django.db.models import Count, F, Max
from django.db.models.fields.tuple_lookups import Tuple, TupleGreaterThan, TupleLessThan
from django.db.models.functions import TruncMinute

from billing.models import Model
from keys.models import InferenceKey
from portal.models import Department, Member, Organization
from usage import activity
from usage.models import UsageEvent, UsageFillState

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
