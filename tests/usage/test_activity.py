"""Property: the distinct-conversation counts and the hourly per-minute peaks (usage/activity.py)
never drift from raw events: the stored rows are what raw events give, whatever order batches
come in and whatever they replay; the engine's distinct conversations and the selectors' peak
equal the same counts over raw events for every range of whole local days; a full rebuild leaves
them unchanged."""

import random
import zoneinfo
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests import factories
from usage import activity
from usage.levels import LOCAL_HOUR
from usage.models import UsageConversation, UsageConversationDaily, UsageEvent, UsageFillState, UsagePeakHourly
from usage.query import RAW, UsageQuery, run
from usage.rollups import LEVELS
from usage.selectors import peak_requests_per_minute
from usage.services import ingest_events, rebuild_rollups
from usage.timebuckets import local_midnight_of

START = datetime(2026, 3, 6, tzinfo=UTC)  # spans New York's spring DST change
TABLES = (*(level.model for level in LEVELS), *activity.MODELS, UsageFillState, UsageEvent)


@pytest.fixture(scope="module")
def estate(django_db_setup, django_db_blocker):
    with django_db_blocker.unblock():
        built = []
        for zone in ("America/New_York", "Asia/Kathmandu"):
            organization = factories.make_organization(f"Activity {zone}", timezone=zone)
            keys = []
            for name in ("A", "B"):
                department = factories.make_department(organization, name)
                keys += [factories.make_inference_key(department)[0] for _ in range(2)]
            built.append((organization, keys))
        model = factories.make_model("activity-model", cny=("1", "0.3", "2.5", "0.1", "0.05"))
        yield built, model
        for table in TABLES:
            table.objects.all().delete()


shapes = st.lists(
    st.tuples(st.integers(0, 1), st.integers(0, 3),  # organization, key (two per department)
              # seconds after START: bunched into a few minutes so that peaks are above 1
              st.one_of(st.integers(0, 4 * 24 * 3600 - 1), st.integers(0, 3).map(lambda m: 86_400 + 60 * m + 7)),
              st.sampled_from([None, None, "c1", "c2", "c3"])),
    min_size=1, max_size=50)


def _snapshot():
    # A day a conversation moved away from may keep a row of 0, which a rebuild never writes.
    return {model.__name__: sorted(tuple(row.values()) for row in model.objects.exclude(
        **({"conversations": 0} if model is UsageConversationDaily else {})).values(
        *(f.attname for f in model._meta.concrete_fields if not f.primary_key and f.attname != "previous_day")))
        for model in activity.MODELS}


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(shapes=shapes, seed=st.integers(0, 1000))
@pytest.mark.django_db(transaction=True)
def test_conversations_and_peaks_equal_raw_events(estate, shapes, seed):
    built, model = estate
    for table in TABLES:
        table.objects.all().delete()
    events = [factories.event(built[org][1][key], model, request_id=f"act-{n}",
                              timestamp=(START + timedelta(seconds=second)).isoformat(),
                              **({"conversation_id": conversation} if conversation else {}))
              for n, (org, key, second, conversation) in enumerate(shapes)]
    # Batches out of time order (a conversation's last day moves back and forth), with a replay.
    random.Random(seed).shuffle(events)
    half = len(events) // 2
    for batch in (events[:half], events[half // 2:]):
        if batch:
            ingest_events(batch)
    raw = list(UsageEvent.objects.all())
    assert len(raw) == len(events)

    for organization, keys in built:
        zone = zoneinfo.ZoneInfo(organization.timezone)
        mine = [e for e in raw if e.organization_id == organization.pk]
        departments = sorted({key.department_id for key in keys})
        newest_day = max((e.timestamp.astimezone(zone).date() for e in mine), default=START.date())
        first_day = START.astimezone(zone).date()
        for d1 in range((newest_day - first_day).days + 1):
            for d2 in range(d1 + 1, (newest_day - first_day).days + 3):
                start = local_midnight_of(first_day + timedelta(days=d1), zone)
                end = local_midnight_of(first_day + timedelta(days=d2), zone)
                inside = [e for e in mine if start <= e.timestamp < end]

                def distinct(chosen):
                    return len({e.conversation_id or f"request {e.request_id}" for e in chosen})

                def peak(chosen):
                    return max(Counter(int(e.timestamp.timestamp()) // 60 for e in chosen).values(), default=0)

                base = dict(organization_id=organization.pk, start=start, end=end, timezone=organization.timezone,
                            conversations=True)
                total = run(UsageQuery(**base), org_timezone=organization.timezone)
                assert total.rows[0].conversations == distinct(inside)
                by_team = run(UsageQuery(**base, group_by=("department",)), org_timezone=organization.timezone)
                assert {row.group["department"]: row.conversations for row in by_team.rows if row.requests} == {
                    department: distinct([e for e in inside if e.department_id == department])
                    for department in departments if any(e.department_id == department for e in inside)}
                assert peak_requests_per_minute(organization.pk, start, end) == peak(inside)
                for department in departments:
                    team = [e for e in inside if e.department_id == department]
                    narrowed = run(UsageQuery(**base, departments=(department,)), org_timezone=organization.timezone)
                    assert narrowed.rows[0].conversations == distinct(team)
                    assert peak_requests_per_minute(organization.pk, start, end, departments=(department,)) == \
                        peak(team)
                # Forced over raw events, the engine gives the same count.
                assert run(UsageQuery(**base), org_timezone=organization.timezone,
                           level=RAW).rows[0].conversations == distinct(inside)

        # The stored peaks are exactly raw events' per-minute maxima per local hour.
        expected = defaultdict(int)
        for e in mine:
            second = int(e.timestamp.timestamp())
            local = e.timestamp.astimezone(zone)
            hour = LOCAL_HOUR.of(second, int(local.utcoffset().total_seconds()), local.date())
            for scope in (e.department_id, activity.ORGANIZATION):
                count = sum(1 for other in mine if int(other.timestamp.timestamp()) // 60 == second // 60
                            and scope in (activity.ORGANIZATION, other.department_id))
                expected[(scope, hour)] = max(expected[(scope, hour)], count)
        stored = {(row.department_id_or_zero, row.hour): row.peak_requests
                  for row in UsagePeakHourly.objects.filter(organization=organization)}
        assert {key: value for key, value in stored.items() if value} == dict(expected)
        assert UsageConversationDaily.objects.filter(organization=organization, conversations__lt=0).count() == 0
        assert UsageConversation.objects.filter(organization=organization).count() == len(
            {(scope, e.conversation_id) for e in mine if e.conversation_id
             for scope in (e.department_id, activity.ORGANIZATION)})

    # A full rebuild (Python folds) leaves the same rows as ingestion (SQL folds on PostgreSQL).
    ingested = _snapshot()
    for organization, _ in built:
        rebuild_rollups(organization=organization)
    assert _snapshot() == ingested
