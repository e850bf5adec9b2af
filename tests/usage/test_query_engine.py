"""The query engine: calendar buckets in any zone, level choice, and every level agreeing."""

import zoneinfo
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from tests import factories
from usage import query
from usage.models import UsageEvent
from usage.query import (
    DAILY,
    DEPARTMENT_DAILY,
    FINE,
    HOURLY,
    KEY_DAILY,
    MODEL_DAILY,
    ORGANIZATION_DAILY,
    RAW,
    UsageQuery,
)
from usage.selectors import export_events
from usage.services import ingest_events
from usage.timebuckets import Granularity


@pytest.fixture
def zoned(db):
    """An organization per zone under test, with a key and two models."""
    def build(zone: str):
        organization = factories.make_organization(f"Org {zone}", timezone=zone)
        department = factories.make_department(organization, "Team")
        key, _ = factories.make_inference_key(department)
        return organization, department, key
    return build


@pytest.fixture
def models(db):
    return factories.make_model("alpha", cny=("1", "0.5", "2", "0", "0")), factories.make_model("beta")


def _ingest_every(key, model, start: datetime, end: datetime, step: timedelta, **fields):
    # Step in UTC: aware local datetimes add wall-clock time, which would hide DST.
    events, moment, number = [], start.astimezone(UTC), 0
    while moment < end:
        events.append(factories.event(key, model, request_id=f"{key.pk}-{model.pk}-{start.isoformat()}-{number}",
                                      timestamp=moment.isoformat(), **fields))
        moment += step
        number += 1
    for offset in range(0, len(events), 1000):
        ingest_events(events[offset : offset + 1000])
    return len(events)


def _daily(organization, start_local: datetime, end_local: datetime, level=None, zone=None):
    q = UsageQuery(organization_id=organization.pk, start=start_local, end=end_local,
                   timezone=zone or organization.timezone, granularity=Granularity.of("day"))
    return query.run(q, level=level)


@pytest.mark.parametrize("level", [None, ORGANIZATION_DAILY, KEY_DAILY, DAILY, DEPARTMENT_DAILY, MODEL_DAILY, HOURLY,
                                   FINE, RAW])
def test_new_york_dst_days_have_23_and_25_hours(zoned, models, level):
    from zoneinfo import ZoneInfo

    organization, department, key = zoned("America/New_York")
    ny = ZoneInfo("America/New_York")
    for day in (datetime(2026, 3, 7, tzinfo=ny), datetime(2026, 10, 31, tzinfo=ny)):
        _ingest_every(key, models[0], day, day + timedelta(days=3), timedelta(minutes=30))
    spring = _daily(organization, datetime(2026, 3, 7, tzinfo=ny), datetime(2026, 3, 10, tzinfo=ny), level)
    autumn = _daily(organization, datetime(2026, 10, 31, tzinfo=ny), datetime(2026, 11, 3, tzinfo=ny), level)
    assert [row.requests for row in spring.rows] == [48, 46, 48]
    assert [row.requests for row in autumn.rows] == [48, 50, 48]
    lengths = [b.end.astimezone(UTC) - b.start.astimezone(UTC) for b in spring.buckets]
    assert lengths == [timedelta(hours=24), timedelta(hours=23), timedelta(hours=24)]
    assert spring.buckets[1].start.isoformat() == "2026-03-08T00:00:00-05:00"
    assert spring.buckets[2].start.isoformat() == "2026-03-09T00:00:00-04:00"
    if level is None:
        assert spring.level == ORGANIZATION_DAILY


@pytest.mark.parametrize("level", [None, DAILY, MODEL_DAILY, HOURLY, FINE, RAW])
def test_kathmandu_days_start_at_a_quarter_past_the_utc_hour(zoned, models, level):
    from zoneinfo import ZoneInfo

    organization, department, key = zoned("Asia/Kathmandu")
    ktm = ZoneInfo("Asia/Kathmandu")
    # 23:59 and 00:00 local on either side of midnight (18:14 and 18:15 UTC).
    ingest_events([factories.event(key, models[0], request_id="before", timestamp="2026-05-01T18:14:00Z"),
                   factories.event(key, models[0], request_id="after", timestamp="2026-05-01T18:15:00Z"),
                   factories.event(key, models[0], request_id="after2", timestamp="2026-05-02T10:00:00Z")])
    result = _daily(organization, datetime(2026, 5, 1, tzinfo=ktm), datetime(2026, 5, 3, tzinfo=ktm), level)
    assert [row.requests for row in result.rows] == [1, 2]
    assert result.buckets[1].start.isoformat() == "2026-05-02T00:00:00+05:45"


def test_days_in_a_zone_other_than_the_organizations_come_from_15_minute_rows(zoned, models):
    from zoneinfo import ZoneInfo

    organization, department, key = zoned("Asia/Shanghai")
    _ingest_every(key, models[0], datetime(2026, 4, 1, tzinfo=UTC), datetime(2026, 4, 3, tzinfo=UTC),
                  timedelta(hours=1))
    kolkata = ZoneInfo("Asia/Kolkata")
    result = _daily(organization, datetime(2026, 4, 1, tzinfo=kolkata), datetime(2026, 4, 3, tzinfo=kolkata),
                    zone="Asia/Kolkata")
    assert result.level == FINE  # Kolkata's days start at half past a Shanghai hour
    # Kolkata's 1 April ends at 18:30 UTC: it sees the 19 events from 00:00 to 18:00 UTC.
    assert [row.requests for row in result.rows] == [19, 24]


def test_weeks_and_months_fold_local_days(zoned, models):
    from zoneinfo import ZoneInfo

    organization, department, key = zoned("Asia/Shanghai")
    sh = ZoneInfo("Asia/Shanghai")
    _ingest_every(key, models[0], datetime(2026, 1, 26, tzinfo=sh), datetime(2026, 3, 2, tzinfo=sh),
                  timedelta(hours=6))
    month = query.run(UsageQuery(organization_id=organization.pk, start=datetime(2026, 1, 26, tzinfo=sh),
                                 end=datetime(2026, 3, 2, tzinfo=sh), timezone="Asia/Shanghai",
                                 granularity=Granularity.of("month")))
    assert [(b.key.isoformat(), row.requests) for b, row in zip(month.buckets, month.rows, strict=True)] == [
        ("2026-01-01", 24), ("2026-02-01", 112), ("2026-03-01", 4)]
    week = query.run(UsageQuery(organization_id=organization.pk, start=datetime(2026, 1, 26, tzinfo=sh),
                                end=datetime(2026, 2, 9, tzinfo=sh), timezone="Asia/Shanghai",
                                granularity=Granularity.of("week")))
    assert [row.requests for row in week.rows] == [28, 28]
    assert week.buckets[0].start.weekday() == 0


@pytest.mark.parametrize("zone", ["Asia/Kolkata", "America/New_York"])
def test_six_hour_buckets_by_model_come_from_the_model_hourly_level(zoned, models, zone):
    """Weave's usage buckets: whole hours of the organization's clock grouped by model (across New
    York's autumn change, and in a half-hour zone) read the model-hourly level and equal raw events."""
    organization, department, key = zoned(zone)
    local = zoneinfo.ZoneInfo(zone)
    start = datetime(2026, 10, 31, tzinfo=local)
    for number, model in enumerate(models):
        _ingest_every(key, model, start + timedelta(minutes=number * 13), start + timedelta(days=3),
                      timedelta(minutes=17 + number * 6), latency_ms=200 + number)
    q = UsageQuery(organization_id=organization.pk, start=start, end=start + timedelta(days=2, hours=18),
                   timezone=zone, granularity=Granularity.of(6 * 3600), group_by=("model",))
    result = query.run(q)
    assert result.level == query.MODEL_HOURLY

    def numbers(rows):
        return [(row.bucket.key, row.group["model"], row.requests, row.cost, row.latency_sum_ms, row.latency_min_ms,
                 row.latency_max_ms) for row in rows]

    assert numbers(result.rows) == numbers(query.run(q, level=RAW).rows)
    assert sum(row.requests for row in result.rows) > 300
    narrowed = query.run(replace(q, group_by=(), models=(models[1].pk,)))
    assert narrowed.level == query.MODEL_HOURLY
    assert [row.requests for row in narrowed.rows] == [
        row.requests for row in query.run(replace(q, group_by=(), models=(models[1].pk,)), level=RAW).rows]


def test_fixed_width_buckets_are_aligned_to_local_midnight_and_filled(zoned, models):
    from zoneinfo import ZoneInfo

    organization, department, key = zoned("Asia/Kolkata")
    kolkata = ZoneInfo("Asia/Kolkata")
    ingest_events([factories.event(key, models[0], request_id="a", timestamp="2026-06-01T00:00:00+05:30"),
                   factories.event(key, models[0], request_id="b", timestamp="2026-06-01T00:07:00+05:30")])
    result = query.run(UsageQuery(organization_id=organization.pk, start=datetime(2026, 6, 1, tzinfo=kolkata),
                                  end=datetime(2026, 6, 1, 0, 20, tzinfo=kolkata), timezone="Asia/Kolkata",
                                  granularity=Granularity.of(300)))
    assert result.level == RAW  # 5-minute buckets are finer than any rollup
    assert [(row.bucket.start.strftime("%H:%M"), row.requests) for row in result.rows] == [
        ("00:00", 1), ("00:05", 1), ("00:10", 0), ("00:15", 0)]


def test_group_by_model_and_the_levels_agree_on_every_number(zoned, models):
    from zoneinfo import ZoneInfo

    organization, department, key = zoned("Asia/Shanghai")
    other_department = factories.make_department(organization, "Other", discount=Decimal("0.9"))
    other_key, _ = factories.make_inference_key(other_department)
    sh = ZoneInfo("Asia/Shanghai")
    start = datetime(2026, 2, 1, tzinfo=sh)
    _ingest_every(key, models[0], start, start + timedelta(days=3), timedelta(minutes=47), prompt_tokens=1234,
                  cached_tokens=200, completion_tokens=321, latency_ms=900)
    _ingest_every(other_key, models[1], start, start + timedelta(days=3), timedelta(minutes=91), status_code=500,
                  latency_ms=4000)
    every_level = (KEY_DAILY, query.DEPARTMENT_KEY_DAILY, DAILY, DEPARTMENT_DAILY, MODEL_DAILY, ORGANIZATION_DAILY,
                   query.MODEL_HOURLY, HOURLY, FINE, RAW)
    levels_by_grouping = {group_by: tuple(level for level in every_level if level == RAW
                                          or query.LEVEL_NAMED[level].keeps(set(group_by)))
                          for group_by in ((), ("model",), ("department",), ("model", "department"), ("key",),
                                           ("key", "member"))}
    for group_by, levels in levels_by_grouping.items():
        answers = {}
        for level in levels:
            result = query.run(UsageQuery(organization_id=organization.pk, start=start,
                                          end=start + timedelta(days=3), timezone="Asia/Shanghai",
                                          granularity=Granularity.of("day"), group_by=group_by), level=level)
            answers[level] = [(row.bucket.key, tuple(row.group.values()), row.requests, row.errors,
                               row.total_tokens, row.cached_tokens, row.cost, row.latency_sum_ms, row.latency_min_ms,
                               row.latency_max_ms) for row in result.rows]
        assert all(answer == answers[RAW] for answer in answers.values()), group_by
        assert sum(r[2] for r in answers[RAW]) > 100
        assert len(answers[RAW]) == 3 * (2 if group_by else 1), group_by  # two models, one per department


def test_hours_of_a_half_hour_zone_come_from_the_hourly_level(zoned, models):
    from zoneinfo import ZoneInfo

    organization, department, key = zoned("Asia/Kolkata")
    _ingest_every(key, models[0], datetime(2026, 4, 1, tzinfo=UTC), datetime(2026, 4, 2, tzinfo=UTC),
                  timedelta(minutes=20))
    kolkata = ZoneInfo("Asia/Kolkata")
    local = UsageQuery(organization_id=organization.pk, start=datetime(2026, 4, 1, 6, tzinfo=kolkata),
                       end=datetime(2026, 4, 1, 9, tzinfo=kolkata), timezone="Asia/Kolkata",
                       granularity=Granularity.of("hour"))
    result = query.run(local)
    assert result.level == HOURLY
    assert [row.requests for row in result.rows] == [3, 3, 3]
    assert [row.requests for row in query.run(local, level=RAW).rows] == [3, 3, 3]
    # UTC hours are half past a Kolkata hour: the stored hours would straddle them.
    in_utc = UsageQuery(organization_id=organization.pk, start=datetime(2026, 4, 1, 1, tzinfo=UTC),
                        end=datetime(2026, 4, 1, 4, tzinfo=UTC), timezone="UTC", granularity=Granularity.of("hour"))
    assert query.run(in_utc).level == FINE


def test_filters_by_department_key_and_model_type(zoned, models):
    organization, department, key = zoned("UTC")
    image = factories.make_model("painter", modality="image", cny=("0", "0", "0", "0.2", "0"))
    other_department = factories.make_department(organization, "Other")
    other_key, _ = factories.make_inference_key(other_department)
    ingest_events([factories.event(key, models[0], request_id="1", timestamp="2026-01-01T01:00:00Z"),
                   factories.event(other_key, image, request_id="2", timestamp="2026-01-01T02:00:00Z",
                                   image_count=3, prompt_tokens=0, completion_tokens=0)])
    base = dict(organization_id=organization.pk, start=datetime(2026, 1, 1, tzinfo=UTC),
                end=datetime(2026, 1, 2, tzinfo=UTC), timezone="UTC")
    assert query.run(UsageQuery(**base, departments=(other_department.pk,))).rows[0].image_count == 3
    assert query.run(UsageQuery(**base, keys=(key.pk,))).rows[0].requests == 1
    images = query.run(UsageQuery(**base, model_types=("image",))).rows[0]
    assert (images.requests, images.cost) == (1, Decimal("0.60000000"))
    assert query.run(UsageQuery(**base, model_types=("video",))).rows[0].requests == 0


def test_group_by_member_and_status_class(zoned, models, world):
    organization, department, key = zoned("UTC")
    ingest_events([factories.event(key, models[0], request_id="ok", timestamp="2026-01-01T01:00:00Z"),
                   factories.event(key, models[0], request_id="bad", timestamp="2026-01-01T01:00:00Z",
                                   status_code=429)])
    result = query.run(UsageQuery(organization_id=organization.pk, start=datetime(2026, 1, 1, tzinfo=UTC),
                                  end=datetime(2026, 1, 2, tzinfo=UTC), timezone="UTC",
                                  group_by=("member", "status_class")))
    assert result.level == FINE
    assert [(row.group["member"], row.group["status_class"], row.requests, row.errors) for row in result.rows] == [
        (None, 2, 1, 0), (None, 4, 1, 1)]


def test_conversations_and_trace_filters_read_raw_events(zoned, models):
    organization, department, key = zoned("UTC")
    ingest_events([
        factories.event(key, models[0], request_id="1", timestamp="2026-01-01T01:00:00Z", conversation_id="c1",
                        op_name="chat", trace_id="t1"),
        factories.event(key, models[0], request_id="2", timestamp="2026-01-01T01:05:00Z", conversation_id="c1",
                        op_name="chat", trace_id="t1", parent_id="1"),
        factories.event(key, models[0], request_id="3", timestamp="2026-01-01T01:10:00Z", op_name="embed"),
    ])
    base = dict(organization_id=organization.pk, start=datetime(2026, 1, 1, tzinfo=UTC),
                end=datetime(2026, 1, 2, tzinfo=UTC), timezone="UTC")
    # Whole days ending after the newest event: counted from the per-day conversation counts,
    # the sums from a rollup.
    everything = query.run(UsageQuery(**base, conversations=True))
    assert (everything.level, everything.rows[0].conversations) == (ORGANIZATION_DAILY, 2)  # c1, and "3" on its own
    # A range that is not whole days is counted over raw events, with the same answer.
    partial = query.run(UsageQuery(**{**base, "end": datetime(2026, 1, 1, 12, tzinfo=UTC)}, conversations=True))
    assert (partial.level, partial.rows[0].conversations) == (RAW, 2)
    assert query.run(UsageQuery(**base, trace=(("op_names", ("chat",)),))).rows[0].requests == 2
    assert query.run(UsageQuery(**base, trace_roots_only=True)).rows[0].requests == 2


def test_percentiles_from_histograms_are_within_two_percent(zoned, models):
    import random

    organization, department, key = zoned("UTC")
    rng = random.Random(7)
    latencies = [int(rng.lognormvariate(6.5, 1.0)) + 1 for _ in range(3000)]
    start = datetime(2026, 1, 1, tzinfo=UTC)
    ingest_events([factories.event(key, models[0], request_id=f"p{i}", latency_ms=latency,
                                   timestamp=(start + timedelta(seconds=20 * i)).isoformat())
                   for i, latency in enumerate(latencies[:1000])])
    ingest_events([factories.event(key, models[0], request_id=f"p{i + 1000}", latency_ms=latency,
                                   timestamp=(start + timedelta(seconds=20 * (i + 1000))).isoformat())
                   for i, latency in enumerate(latencies[1000:2000])])
    ingest_events([factories.event(key, models[0], request_id=f"p{i + 2000}", latency_ms=latency,
                                   timestamp=(start + timedelta(seconds=20 * (i + 2000))).isoformat())
                   for i, latency in enumerate(latencies[2000:])])
    q = UsageQuery(organization_id=organization.pk, start=start, end=start + timedelta(days=1), timezone="UTC",
                   granularity=Granularity.of("hour"), percentiles=(50, 99, 99.9))
    from_histogram = query.run(q)
    assert from_histogram.percentile_level == HOURLY
    exact_rows = query.run(UsageQuery(**{**q.__dict__, "group_by": ("model",)}))  # forces raw percentiles
    assert exact_rows.percentile_level == RAW
    exact = {row.bucket.key: row.percentiles for row in exact_rows.rows}
    checked = 0
    for row in from_histogram.rows:
        for p, value in row.percentiles.items():
            truth = exact.get(row.bucket.key, {}).get(p)
            if truth is None:
                assert value is None
                continue
            assert abs(value - truth) / truth <= 0.02, (row.bucket.start, p, value, truth)
            checked += 1
    assert checked >= 40


@pytest.mark.parametrize("level", [None, HOURLY, FINE, RAW])
def test_fixed_width_buckets_keep_both_repeated_hours_of_a_dst_fall_back(zoned, models, level):
    """1 November 2026 in New York has two 01:00 hours; each bucket of each level keeps its event."""
    organization, department, key = zoned("America/New_York")
    start = datetime(2026, 11, 1, 4, tzinfo=UTC)  # 00:00 EDT
    ingest_events([factories.event(key, models[0], request_id=f"fold-{hour}", latency_ms=100 * 2**hour,
                                   timestamp=(start + timedelta(hours=hour, minutes=10)).isoformat())
                   for hour in range(4)])
    result = query.run(UsageQuery(organization_id=organization.pk, start=start, end=start + timedelta(hours=4),
                                  timezone="America/New_York", granularity=Granularity.of(3600),
                                  percentiles=(50,)), level=level)
    assert [(row.bucket.start.isoformat(), row.requests) for row in result.rows] == [
        ("2026-11-01T00:00:00-04:00", 1), ("2026-11-01T01:00:00-04:00", 1),
        ("2026-11-01T01:00:00-05:00", 1), ("2026-11-01T02:00:00-05:00", 1)]
    assert [row.percentiles[50] for row in result.rows] == [pytest.approx(100 * 2**hour, rel=0.015)
                                                            for hour in range(4)]


@pytest.mark.parametrize("departments", [(), ("Team",)], ids=["organization", "one department"])
def test_percentiles_of_whole_local_days_come_from_the_daily_histograms(zoned, models, departments):
    """Whole days of the organization's clock: the organization's percentiles from one histogram a
    day, a department's from its own daily histograms (the hourly ones have no department), each
    within 2 % of percentile_cont over the raw latencies, and per day as well as in total."""
    import random

    organization, department, key = zoned("Asia/Kolkata")
    other_key, _ = factories.make_inference_key(factories.make_department(organization, "Other"))
    rng = random.Random(11)
    zone = zoneinfo.ZoneInfo("Asia/Kolkata")
    start = datetime(2026, 1, 1, tzinfo=zone)
    events = [factories.event(key if i % 3 else other_key, models[i % 2], request_id=f"d{i}",
                              latency_ms=int(rng.lognormvariate(6.0 + (i % 3 == 0), 0.9)) + 1,
                              timestamp=(start + timedelta(seconds=173 * i)).isoformat())
              for i in range(1500)]  # three days and a bit
    ingest_events(events[:1000])
    ingest_events(events[1000:])
    narrowed = {"departments": (department.pk,)} if departments else {}
    for granularity in (None, Granularity.of("day")):
        q = UsageQuery(organization_id=organization.pk, start=start, end=start + timedelta(days=3),
                       timezone="Asia/Kolkata", granularity=granularity, percentiles=(50, 90, 99), **narrowed)
        estimated = query.run(q)
        assert estimated.percentile_level == (DEPARTMENT_DAILY if departments else ORGANIZATION_DAILY)
        assert estimated.level == estimated.percentile_level
        for row in estimated.rows:
            events = UsageEvent.objects.filter(organization=organization, timestamp__gte=row.bucket.start,
                                               timestamp__lt=row.bucket.end, **(
                                                   {"department": department} if departments else {}))
            latencies = sorted(events.values_list("latency_ms", flat=True))
            assert row.requests == len(latencies) > 100
            for p in (50, 90, 99):
                # percentile_cont over the raw latencies of the bucket
                exact = query._percentile(latencies, p)
                assert row.percentiles[p] == pytest.approx(exact, rel=0.02), (row.bucket, p)


def test_percentiles_interpolate_between_ranks_as_percentile_cont_does(zoned, models):
    organization, department, key = zoned("UTC")
    start = datetime(2026, 1, 1, tzinfo=UTC)
    ingest_events([factories.event(key, models[0], request_id=f"c{i}", latency_ms=latency,
                                   timestamp=(start + timedelta(minutes=i)).isoformat())
                   for i, latency in enumerate([1000, 100, 300, 200])])
    q = UsageQuery(organization_id=organization.pk, start=start, end=start + timedelta(hours=1), timezone="UTC",
                   percentiles=(0, 50, 99, 100))
    exact = query.run(UsageQuery(**{**q.__dict__, "group_by": ("model",)}))  # raw latencies
    assert exact.percentile_level == RAW
    # PostgreSQL: percentile_cont(ARRAY[0, 0.5, 0.99, 1]) WITHIN GROUP (ORDER BY latency) = {100, 250, 979, 1000}
    assert exact.rows[0].percentiles == {0: 100, 50: 250, 99: pytest.approx(979), 100: 1000}
    estimated = query.run(q)
    assert estimated.percentile_level == HOURLY
    for p, value in estimated.rows[0].percentiles.items():
        assert value == pytest.approx(exact.rows[0].percentiles[p], rel=0.015)


def test_hourly_percentiles_read_every_non_empty_bin(zoned, models):
    """An hour's histogram is stored from its first non-empty bin on (and read per hour by a
    binary search in SQL on PostgreSQL); the lowest percentile must still land in that bin,
    whatever the smallest latency is."""
    from usage import histogram
    from usage.models import UsageHourly

    organization, department, key = zoned("UTC")
    start = datetime(2026, 1, 1, tzinfo=UTC)
    smallest = [0, 1, 2, 3, 5, 17, 34, 35, 36, 100, 999, 1000, 30000, 65535]
    events = []
    for hour, low in enumerate(smallest):
        for i, latency in enumerate([low, low + 1, low * 2 + 7, low * 3 + 50, low + 4000]):
            events.append(factories.event(key, models[0], request_id=f"h{hour}-{i}", latency_ms=latency,
                                          timestamp=(start + timedelta(hours=hour, minutes=i)).isoformat()))
    ingest_events(events)
    qs = (0, 20, 50, 99, 100)
    result = query.run(UsageQuery(organization_id=organization.pk, start=start,
                                  end=start + timedelta(hours=len(smallest)), timezone="UTC",
                                  granularity=Granularity.of("hour"), percentiles=qs))
    assert result.percentile_level == HOURLY
    stored = {row.hour: row.latency_bins for row in UsageHourly.objects.filter(organization=organization)}
    for row, low in zip(result.rows, smallest, strict=True):
        assert row.percentiles == histogram.percentiles([stored[int(row.bucket.start.timestamp())]], qs)
        assert row.percentiles[0] == histogram.value_of(histogram.bin_of(low))


@pytest.mark.parametrize("granularity", [3600, 6 * 3600, None], ids=["hours", "six-hours", "whole-range"])
def test_percentiles_of_one_hour_and_of_several_agree_with_the_stored_hours(zoned, models, granularity):
    """One-hour buckets are read per hour (the bins of each rank found in SQL on PostgreSQL);
    longer buckets add their hours' histograms up. Either way: the percentiles of the stored
    hours of the bucket added up, and within 2 % of percentile_cont over the raw latencies."""
    from usage import histogram
    from usage.models import UsageHourly

    organization, department, key = zoned("Asia/Kolkata")  # local hours start at half past UTC ones
    start = datetime(2026, 1, 1, tzinfo=zoneinfo.ZoneInfo("Asia/Kolkata"))
    latencies = [(7 * i * i + 13 * i) % 5000 + (i % 3) for i in range(600)]
    ingest_events([factories.event(key, models[i % 2], request_id=f"s{i}", latency_ms=latency,
                                   timestamp=(start + timedelta(seconds=71 * i)).astimezone(UTC).isoformat())
                   for i, latency in enumerate(latencies)])
    qs = (0, 50, 90, 99, 100)
    q = UsageQuery(organization_id=organization.pk, start=start, end=start + timedelta(hours=12),
                   timezone="Asia/Kolkata", granularity=Granularity.of(granularity), percentiles=qs)
    estimated = query.run(q)
    assert estimated.percentile_level == HOURLY
    stored = {row.hour: row.latency_bins for row in UsageHourly.objects.filter(organization=organization)}
    checked = 0
    for row in estimated.rows:
        hours = [bins for hour, bins in stored.items()
                 if row.bucket.start.timestamp() <= hour < row.bucket.end.timestamp()]
        assert row.percentiles == histogram.percentiles(hours, qs)
        if not row.requests:
            continue
        raw = sorted(latency for i, latency in enumerate(latencies)
                     if row.bucket.start <= start + timedelta(seconds=71 * i) < row.bucket.end)
        for p in qs:
            position = (len(raw) - 1) * p / 100
            below = int(position)
            truth = raw[below] + (position - below) * (raw[min(below + 1, len(raw) - 1)] - raw[below])
            assert abs(row.percentiles[p] - truth) <= 0.02 * truth, (row.bucket.start, p, row.percentiles[p], truth)
            checked += 1
    assert checked >= len(qs)


def test_a_query_needs_an_aware_ordered_range_and_known_groups(db):
    start = datetime(2026, 1, 1, tzinfo=UTC)
    with pytest.raises(ValueError):
        UsageQuery(organization_id=1, start=start, end=start, timezone="UTC")
    with pytest.raises(ValueError):
        UsageQuery(organization_id=1, start=start.replace(tzinfo=None), end=start, timezone="UTC")
    with pytest.raises(ValueError):
        UsageQuery(organization_id=1, start=start, end=start + timedelta(1), timezone="UTC", group_by=("colour",))
    with pytest.raises(zoneinfo.ZoneInfoNotFoundError):
        UsageQuery(organization_id=1, start=start, end=start + timedelta(1), timezone="Mars/Base")


def test_an_event_just_before_a_bucket_boundary_stays_in_its_bucket(zoned, models):
    organization, department, key = zoned("UTC")
    ingest_events([factories.event(key, models[0], request_id="edge", timestamp="2026-01-01T00:04:59.600Z"),
                   factories.event(key, models[0], request_id="next", timestamp="2026-01-01T00:05:00Z")])
    result = query.run(UsageQuery(organization_id=organization.pk, start=datetime(2026, 1, 1, tzinfo=UTC),
                                  end=datetime(2026, 1, 1, 0, 10, tzinfo=UTC), timezone="UTC",
                                  granularity=Granularity.of(300)))
    assert [row.requests for row in result.rows] == [1, 1]


@pytest.mark.parametrize("descending", [False, True], ids=["ascending", "descending"])
def test_export_pages_walk_every_event_once_including_ties(zoned, models, descending):
    organization, department, key = zoned("UTC")
    # Several events share each instant, so the keyset must break ties by id.
    ingest_events([factories.event(key, models[0], request_id=f"x{i}",
                                   timestamp=f"2026-01-01T00:{i // 4:02d}:00Z") for i in range(50)])
    start, end = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 2, tzinfo=UTC)
    seen, after = [], None
    while True:
        page = export_events(organization.pk, start, end, limit=7, after=after, descending=descending)
        seen += [event.request_id for event in page.events]
        if page.next_after is None:
            break
        after = page.next_after
    assert sorted(seen) == sorted(f"x{i}" for i in range(50)) and len(seen) == 50
    stamps = [int(request_id[1:]) // 4 for request_id in seen]
    assert stamps == sorted(stamps, reverse=descending)


def test_narrowed_sums_compute_only_what_was_asked(zoned, models):
    organization, department, key = zoned("UTC")
    ingest_events([factories.event(key, models[0], request_id="n1", timestamp="2026-01-01T00:01:00Z",
                                   prompt_tokens=10, completion_tokens=5)])
    base = dict(organization_id=organization.pk, start=datetime(2026, 1, 1, tzinfo=UTC),
                end=datetime(2026, 1, 1, 0, 10, tzinfo=UTC), timezone="UTC", granularity=Granularity.of(300))
    row = query.run(UsageQuery(**base, sums=("prompt_tokens",), latency_range=False)).rows[0]
    assert (row.requests, row.prompt_tokens, row.completion_tokens, row.latency_max_ms) == (1, 10, 0, None)
    full = query.run(UsageQuery(**base)).rows[0]
    assert (full.completion_tokens, full.latency_max_ms) == (5, 800)
    with pytest.raises(ValueError):
        UsageQuery(**base, sums=("weight",))


@pytest.mark.parametrize("granularity", [None, "day", "week"])
@pytest.mark.parametrize("group_by", [(), ("model",), ("department",), ("key",)])
def test_ranges_inside_local_days_take_whole_days_from_a_day_level(zoned, models, granularity, group_by):
    from zoneinfo import ZoneInfo

    organization, department, key = zoned("America/New_York")
    ny = ZoneInfo("America/New_York")
    _ingest_every(key, models[0], datetime(2026, 10, 30, tzinfo=ny), datetime(2026, 11, 5, tzinfo=ny),
                  timedelta(minutes=17), latency_ms=300)
    _ingest_every(key, models[1], datetime(2026, 10, 30, tzinfo=ny), datetime(2026, 11, 5, tzinfo=ny),
                  timedelta(minutes=41), latency_ms=900)
    # From 10:07:13 on a Friday to 15:30 the next Wednesday, across the 25-hour 1 November.
    q = UsageQuery(organization_id=organization.pk, start=datetime(2026, 10, 30, 10, 7, 13, tzinfo=ny),
                   end=datetime(2026, 11, 4, 15, 30, tzinfo=ny), timezone="America/New_York",
                   granularity=Granularity.of(granularity), group_by=group_by)
    result = query.run(q)
    exact = query.run(q, level=RAW)

    def numbers(rows):
        return [(row.bucket.key, tuple(row.group.values()), row.requests, row.cost, row.latency_sum_ms,
                 row.latency_min_ms, row.latency_max_ms) for row in rows]

    assert numbers(result.rows) == numbers(exact.rows)
    assert sum(row.requests for row in result.rows) > 300
    middle = {(): ORGANIZATION_DAILY, ("model",): MODEL_DAILY, ("department",): DEPARTMENT_DAILY,
              ("key",): query.DEPARTMENT_KEY_DAILY}[group_by]
    # 10:07:13 is off the 15-minute grid (raw events), 15:30 on it (the fine level).
    assert result.level.split("+") == list(dict.fromkeys([RAW, middle, FINE]))


@pytest.mark.parametrize("granularity", ["day", "hour", "whole hours"])
def test_row_counts_and_keyset_pages_equal_the_raw_events(zoned, models, granularity):
    """Groups per bucket (row_counts) and the keyset walk (limit, after_group) from the levels the
    engine picks (the key-daily level for whole days, fine and raw rows at the edges, the hour
    group counts for whole local hours, the repeated one included) equal the same read over raw
    events, page after page."""
    from zoneinfo import ZoneInfo

    organization, department, key = zoned("America/New_York")
    ny = ZoneInfo("America/New_York")
    second_key, _ = factories.make_inference_key(department)
    for number, (which, model) in enumerate([(key, models[0]), (second_key, models[1]), (key, models[1])]):
        _ingest_every(which, model, datetime(2026, 10, 30, tzinfo=ny) + timedelta(minutes=number * 7),
                      datetime(2026, 11, 3, tzinfo=ny), timedelta(minutes=23 + number * 11), latency_ms=300)
    start, end = datetime(2026, 10, 30, 10, 7, 13, tzinfo=ny), datetime(2026, 11, 2, 15, 30, tzinfo=ny)
    if granularity == "hour":
        start, end = datetime(2026, 11, 1, 0, 0, tzinfo=ny), datetime(2026, 11, 1, 7, 45, tzinfo=ny)
    elif granularity == "whole hours":
        start, end = datetime(2026, 11, 1, 0, 0, tzinfo=ny), datetime(2026, 11, 1, 9, 0, tzinfo=ny)
    group_by = ("department", "key", "member", "model")
    fields = dict(organization_id=organization.pk, start=start, end=end, timezone="America/New_York",
                  granularity=Granularity.of(granularity.removeprefix("whole ").removesuffix("s")),
                  group_by=group_by, fill_empty=False)
    exact = query.run(UsageQuery(**fields), level=RAW).rows
    # Whole local hours are counted off the per-hour group counts, the rest from the levels.
    hours = query.buckets(start, end, ny, Granularity.of("hour"))
    from_hours = query._hour_group_counts(UsageQuery(**fields), ny, hours)
    assert (from_hours is not None) == (granularity == "whole hours")
    counts = query.row_counts(UsageQuery(**fields))
    expected_counts: dict = {}
    for row in exact:
        expected_counts[row.bucket.key] = expected_counts.get(row.bucket.key, 0) + 1
    assert counts == expected_counts and sum(counts.values()) > 10

    def numbers(rows):
        return [(row.bucket.key, tuple(row.group.values()), row.requests, row.cost, row.latency_min_ms)
                for row in rows]

    # Walk bucket by bucket, four rows a page, continuing inside a bucket after its last group.
    walked = []
    for bucket in query.run(UsageQuery(**fields), level=RAW).buckets:
        after = None
        while True:
            # In UTC: two instants of the repeated hour compare by wall time in their own zone (PEP 495).
            bounds = {"start": max(start, bucket.start.astimezone(UTC)), "end": min(end, bucket.end.astimezone(UTC))}
            page = query.run(UsageQuery(**{**fields, **bounds}, limit=4, after_group=after)).rows
            walked += page
            if len(page) < 4:
                break
            after = tuple(page[-1].group[name] for name in group_by)
    # By epoch: the repeated hour's two buckets have one wall time.
    stored_order = sorted(exact, key=lambda row: (row.bucket.start.timestamp(),
                                                  *((row.group[n] or 0) for n in group_by)))
    assert numbers(walked) == numbers(stored_order)
    # One page across the whole range reads the same rows in the same order.
    assert numbers(query.run(UsageQuery(**fields, limit=7)).rows) == numbers(stored_order[:7])


@pytest.mark.parametrize("level", [None, KEY_DAILY, DAILY, MODEL_DAILY, FINE, RAW])
def test_true_counts_are_the_events_whose_value_is_not_zero(zoned, models, level):
    """count_true / count_false: read off the sums where a measure counts them (errors, requests),
    else counted over raw events, per bucket and group, 0 in empty buckets."""
    organization, department, key = zoned("Asia/Kolkata")
    zone = organization.zone
    day = datetime(2026, 3, 2, tzinfo=zone)
    shapes = [(models[0], 1000, 0, 200), (models[0], 1000, 500, 500), (models[1], 0, 0, 200),
              (models[1], 300, 300, 429), (models[0], 10, 0, 503)]
    ingest_events([factories.event(key, model, request_id=f"t{number}",
                                   timestamp=(day + timedelta(hours=number * 3)).isoformat(), prompt_tokens=prompt,
                                   cache_creation_tokens=written, completion_tokens=0 if number == 2 else 5,
                                   status_code=status)
                   for number, (model, prompt, written, status) in enumerate(shapes)])
    values = ("cache_creation_tokens", "prompt_tokens", "errors", "requests", "completion_tokens", "input_cost")
    result = query.run(UsageQuery(organization_id=organization.pk, start=day, end=day + timedelta(days=2),
                                  timezone=organization.timezone, granularity=Granularity.of("day"),
                                  group_by=("model",), true_counts=values), level=level)
    by_model = {(row.bucket.start.date(), row.group["model"]): row for row in result.rows}
    first, second = day.date(), day.date() + timedelta(days=1)
    alpha, beta = by_model[(first, models[0].pk)], by_model[(first, models[1].pk)]
    assert alpha.true_counts == {"cache_creation_tokens": 1, "prompt_tokens": 3, "errors": 2, "requests": 3,
                                 "completion_tokens": 3, "input_cost": 3}
    assert (alpha.false_count("cache_creation_tokens"), alpha.false_count("errors")) == (2, 1)
    assert beta.true_counts == {"cache_creation_tokens": 1, "prompt_tokens": 1, "errors": 1, "requests": 2,
                                "completion_tokens": 1, "input_cost": 1}
    assert beta.false_count("prompt_tokens") == 1
    for model in models:
        empty = by_model[(second, model.pk)]
        assert empty.true_counts == dict.fromkeys(values, 0) and empty.false_count("requests") == 0


def test_hours_a_half_hour_shift_splits_are_counted_on_the_levels_and_equal_the_raw_events(zoned, models):
    """Lord Howe's clock moves by half an hour (2026-10-04 02:00 → 02:30 local): around the shift a
    bucket of an hour is not one local hour of four 15-minute slots, so the per-hour group counts
    must not answer it; the counts still equal the raw events'."""
    from zoneinfo import ZoneInfo

    from usage.levels import is_clean_local_hour

    zone = ZoneInfo("Australia/Lord_Howe")
    organization, department, key = zoned("Australia/Lord_Howe")
    second_key, _ = factories.make_inference_key(department)
    for number, (which, model) in enumerate([(key, models[0]), (second_key, models[1])]):
        _ingest_every(which, model, datetime(2026, 10, 3, 22, tzinfo=zone) + timedelta(minutes=number * 5),
                      datetime(2026, 10, 4, 8, tzinfo=zone), timedelta(minutes=17 + number * 6), latency_ms=300)
    start, end = datetime(2026, 10, 3, 23, tzinfo=zone), datetime(2026, 10, 4, 6, 30, tzinfo=zone)
    # 01:00–02:00 (+10:30) is a whole hour; the clock then reads 02:30 (+11:00), and the hour the
    # buckets start at 02:30 is not one local hour of four slots.
    assert is_clean_local_hour(int(datetime(2026, 10, 4, 1, tzinfo=zone).timestamp()), zone)
    assert not is_clean_local_hour(int(datetime(2026, 10, 4, 2, 30, tzinfo=zone).timestamp()), zone)
    fields = dict(organization_id=organization.pk, start=start, end=end, timezone="Australia/Lord_Howe",
                  granularity=Granularity.of("hour"), group_by=("department", "key", "member", "model"),
                  fill_empty=False)
    hours = query.buckets(start, end, zone, Granularity.of("hour"))
    assert query._hour_group_counts(UsageQuery(**fields), zone, hours) is None
    expected: dict = {}
    for row in query.run(UsageQuery(**fields), level=RAW).rows:
        expected[row.bucket.key] = expected.get(row.bucket.key, 0) + 1
    assert query.row_counts(UsageQuery(**fields)) == expected and sum(expected.values()) > 10
