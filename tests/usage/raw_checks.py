"""What the daily histograms, the key-daily row counts and the hour group counts must hold,
worked out from the raw events alone (no rollup code): shared by the property test, the re-rating
tests and the fold-queue tests."""

import zoneinfo
from collections import defaultdict

from usage import histogram
from usage.measures import ROW_MEASURES
from usage.models import UsageDepartmentDaily, UsageEvent, UsageHourGroups, UsageKeyDailyRows, UsageOrganizationDaily


def assert_daily_levels_equal_raw_events(organization_ids=None) -> None:
    """The organization-daily level's sums, both daily levels' latency histograms, each day's
    key-daily row count and each local hour's count of breakdown groups equal what the stored raw
    events give, for every organization (or those named)."""
    events = UsageEvent.objects.select_related("organization")
    organization_daily = UsageOrganizationDaily.objects.all()
    department_daily = UsageDepartmentDaily.objects.all()
    counts = UsageKeyDailyRows.objects.filter(rows__gt=0)
    hour_groups = UsageHourGroups.objects.filter(groups__gt=0)
    if organization_ids is not None:
        events = events.filter(organization_id__in=organization_ids)
        organization_daily = organization_daily.filter(organization_id__in=organization_ids)
        department_daily = department_daily.filter(organization_id__in=organization_ids)
        counts = counts.filter(organization_id__in=organization_ids)
        hour_groups = hour_groups.filter(organization_id__in=organization_ids)
    sums = defaultdict(lambda: {measure.name: measure.empty for measure in ROW_MEASURES})
    organization_bins = defaultdict(lambda: defaultdict(int))
    department_bins = defaultdict(lambda: defaultdict(int))
    groups = defaultdict(set)
    groups_by_hour = defaultdict(set)
    for event in events:
        local = event.timestamp.astimezone(zoneinfo.ZoneInfo(event.organization.timezone))
        day = local.date()
        # The instant the local hour began (a repeated hour keeps its fold: its own instant).
        hour = int(local.replace(minute=0, second=0, microsecond=0).timestamp())
        groups_by_hour[(event.organization_id, hour)].add(
            (event.department_id, event.key_id, event.member_id or 0, event.model_id))
        row = sums[(event.organization_id, day, event.currency)]
        for measure in ROW_MEASURES:
            row[measure.name] = measure.merge.combine(row[measure.name], measure.of_event(event))
        latency_bin = histogram.bin_of(event.latency_ms)
        organization_bins[(event.organization_id, day, event.currency)][latency_bin] += 1
        department_bins[(event.organization_id, day, event.department_id, event.currency)][latency_bin] += 1
        groups[(event.organization_id, day)].add(
            (event.department_id, event.key_id, event.member_id or 0, event.model_id, event.currency))
    assert {(row.organization_id, row.day, row.currency): {measure.name: getattr(row, measure.name)
                                                           for measure in ROW_MEASURES}
            for row in organization_daily} == dict(sums)
    assert {(row.organization_id, row.day, row.currency): row.latency_bins for row in organization_daily} == {
        key: histogram.encode(bins) for key, bins in organization_bins.items()}
    assert {(row.organization_id, row.day, row.department_id, row.currency): row.latency_bins
            for row in department_daily} == {key: histogram.encode(bins) for key, bins in department_bins.items()}
    assert {(row.organization_id, row.day): row.rows for row in counts} == {
        key: len(found) for key, found in groups.items()}
    assert {(row.organization_id, row.hour): row.groups for row in hour_groups} == {
        key: len(found) for key, found in groups_by_hour.items()}
