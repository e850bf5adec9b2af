"""Property: for any set of events, every rollup level equals the aggregate of its raw events,
and histogram percentiles are within 2 % of the exact ones."""

import zoneinfo
from collections import defaultdict
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests import factories
from tests.usage.raw_checks import assert_daily_levels_equal_raw_events
from usage import histogram
from usage.measures import ROW_MEASURES
from usage.models import (
    UsageDaily,
    UsageDepartmentDaily,
    UsageDepartmentKeyDaily,
    UsageEvent,
    UsageFillState,
    UsageFine15,
    UsageHourGroups,
    UsageHourly,
    UsageKeyDaily,
    UsageKeyDailyRows,
    UsageModelDaily,
    UsageModelHourly,
    UsageOrganizationDaily,
)
from usage.rollups import LEVELS
from usage.services import ingest_events, rebuild_rollups

START = datetime(2026, 3, 6, tzinfo=UTC)  # spans New York's spring DST change
# Every measure a rollup row keeps, but the latency histogram (checked on its own below).
METRICS = tuple(measure.name for measure in ROW_MEASURES)


@pytest.fixture(scope="module")
def estate(django_db_setup, django_db_blocker):
    """Two organizations in awkward zones, two departments each, keys and models; kept for the module."""
    with django_db_blocker.unblock():
        built = []
        for zone in ("America/New_York", "Asia/Kathmandu"):
            organization = factories.make_organization(f"Prop {zone}", timezone=zone)
            keys = []
            for name in ("A", "B"):
                department = factories.make_department(organization, name)
                keys += [factories.make_inference_key(department)[0] for _ in range(2)]
            built.append((organization, keys))
        # The first model prices cache writes of its own; the others charge them as input.
        cache_write_prices = (("3.75",), (), ())
        models = [factories.make_model(f"prop-{i}", cny=(str(i + 1), "0.3", "2.5", "0.1", "0.05", *written))
                  for i, written in enumerate(cache_write_prices)]
        yield built, models
        for table in (*(level.model for level in LEVELS), UsageKeyDailyRows, UsageHourGroups, UsageFillState,
                      UsageEvent):
            table.objects.all().delete()


event_shapes = st.lists(
    st.tuples(
        st.integers(0, 1), st.integers(0, 3), st.integers(0, 2),  # organization, key, model
        st.integers(0, 4 * 24 * 3600 - 1),  # seconds after START
        st.integers(0, 5000), st.integers(0, 3000), st.integers(0, 100),  # prompt, completion, cached %
        st.integers(0, 100),  # cache writes, % of the rest of the prompt
        st.integers(0, 3), st.integers(0, 10),  # images, video seconds
        st.integers(0, 120_000), st.sampled_from([200, 200, 200, 429, 500]),
    ),
    min_size=1, max_size=60,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(shapes=event_shapes)
@pytest.mark.django_db(transaction=True)
def test_every_rollup_level_equals_its_raw_events(estate, shapes):
    built, models = estate
    for table in (*(level.model for level in LEVELS), UsageKeyDailyRows, UsageHourGroups, UsageFillState, UsageEvent):
        table.objects.all().delete()
    events = []
    for number, (org, key, model, second, prompt, completion, cached_pct, written_pct, images, video, latency,
                 status) in enumerate(shapes):
        cached = prompt * cached_pct // 100
        events.append(factories.event(
            built[org][1][key], models[model], request_id=f"prop-{number}",
            timestamp=(START + timedelta(seconds=second)).isoformat(), prompt_tokens=prompt,
            completion_tokens=completion, cached_tokens=cached,
            cache_creation_tokens=(prompt - cached) * written_pct // 100, image_count=images,
            video_seconds=video, latency_ms=latency, status_code=status))
    # Two batches, the second replaying part of the first: replays must add nothing.
    ingest_events(events[: len(events) // 2 + 1])
    ingest_events(events)

    raw = list(UsageEvent.objects.all())
    assert len(raw) == len(events)
    zones = {org.pk: zoneinfo.ZoneInfo(org.timezone) for org, _ in built}

    def expected(key_of):
        groups = defaultdict(lambda: {measure.name: measure.empty for measure in ROW_MEASURES})
        for e in raw:
            g = groups[key_of(e)]
            for measure in ROW_MEASURES:
                g[measure.name] = measure.merge.combine(g[measure.name], measure.of_event(e))
        return dict(groups)

    def stored(model, key_fields):
        return {tuple(getattr(row, f) for f in key_fields): {name: getattr(row, name) for name in METRICS}
                for row in model.objects.all()}

    def bucket(e):
        return int(e.timestamp.timestamp()) // 900 * 900

    assert stored(UsageFine15, ("organization_id", "bucket", "department_id", "key_id", "model_id",
                                "member_id_or_zero", "status_class")) == expected(
        lambda e: (e.organization_id, bucket(e), e.department_id, e.key_id, e.model_id, e.member_id or 0,
                   e.status_code // 100))
    def local(e):
        return e.timestamp.astimezone(zones[e.organization_id])

    def local_hour(e):
        epoch = int(e.timestamp.timestamp())
        return epoch - (epoch + int(local(e).utcoffset().total_seconds())) % 3600

    assert stored(UsageHourly, ("organization_id", "hour")) == expected(lambda e: (e.organization_id, local_hour(e)))
    assert stored(UsageModelHourly, ("organization_id", "hour", "model_id")) == expected(
        lambda e: (e.organization_id, local_hour(e), e.model_id))
    assert stored(UsageKeyDaily, ("organization_id", "day", "department_id", "key_id", "member_id_or_zero",
                                  "model_id")) == expected(
        lambda e: (e.organization_id, local(e).date(), e.department_id, e.key_id, e.member_id or 0, e.model_id))
    assert stored(UsageDepartmentKeyDaily, ("organization_id", "day", "department_id", "key_id")) == expected(
        lambda e: (e.organization_id, local(e).date(), e.department_id, e.key_id))
    assert stored(UsageDaily, ("organization_id", "day", "department_id", "model_id")) == expected(
        lambda e: (e.organization_id, local(e).date(), e.department_id, e.model_id))
    assert stored(UsageDepartmentDaily, ("organization_id", "day", "department_id")) == expected(
        lambda e: (e.organization_id, local(e).date(), e.department_id))
    assert stored(UsageModelDaily, ("organization_id", "day", "model_id")) == expected(
        lambda e: (e.organization_id, local(e).date(), e.model_id))
    assert stored(UsageOrganizationDaily, ("organization_id", "day")) == expected(
        lambda e: (e.organization_id, local(e).date()))
    # The daily histograms and each day's key-daily row count.
    assert_daily_levels_equal_raw_events()

    histograms = defaultdict(lambda: defaultdict(int))
    latencies = defaultdict(list)
    for e in raw:
        histograms[(e.organization_id, local_hour(e))][histogram.bin_of(e.latency_ms)] += 1
        latencies[e.organization_id].append(e.latency_ms)
    stored_bins = {(h.organization_id, h.hour): h.latency_bins for h in UsageHourly.objects.all()}
    assert stored_bins == {key: histogram.encode(counts) for key, counts in histograms.items()}
    assert {key: histogram.decode(bins) for key, bins in stored_bins.items()} == histograms
    for organization_id, values in latencies.items():
        values.sort()
        merged = []
        for (org, _hour), bins in stored_bins.items():
            if org == organization_id:
                merged = histogram.add(merged, bins)
        for q in (50, 90, 99):
            position = (len(values) - 1) * q / 100  # percentile_cont
            below = int(position)
            exact = values[below] + (position - below) * (values[min(below + 1, len(values) - 1)] - values[below])
            estimate = histogram.percentile(merged, q)
            assert abs(estimate - exact) <= 0.02 * exact, (q, estimate, exact)
    # Ingestion folds in SQL on PostgreSQL and in Python elsewhere; a rebuild always folds in
    # Python. Both must leave every level exactly as it was.
    def snapshot():
        return {**{level.model.__name__: sorted(
            tuple(getattr(row, f) for f in (*level.key_columns, *level.metric_columns))
            for row in level.model.objects.all()) for level in LEVELS},
            "key-daily rows": sorted(UsageKeyDailyRows.objects.filter(rows__gt=0).values_list(
                "organization_id", "day", "rows")),
            "hour groups": sorted(UsageHourGroups.objects.filter(groups__gt=0).values_list(
                "organization_id", "hour", "groups"))}

    ingested = snapshot()
    for organization, _ in built:
        rebuild_rollups(organization=organization)
    assert snapshot() == ingested

    for organization, _ in built:
        state = UsageFillState.objects.filter(organization=organization).first()
        mine = [e for e in raw if e.organization_id == organization.pk]
        assert (state.events if state else 0) == len(mine)
        if mine:
            assert state.newest_event_at == max(e.timestamp for e in mine)
