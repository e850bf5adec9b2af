"""Daily latency histograms (per department on the department-daily level, per organization on
a new organization-daily level) and each local day's count of key-daily rows, back-filled from the
raw events already stored (bench/RESULTS.md, 2026-12-06: what the dashboard's 90-day and
one-department reads and the breakdown's 90-day total missed by)."""

import bisect

import django.db.models.deletion
from django.db import migrations, models

import usage.models

# An event's local day on its organization's clock, as the folds work it out (0007 did the same).
_LOCAL_EVENTS = ("(SELECT e.*, CAST(e.\"timestamp\" AT TIME ZONE o.timezone AS date) AS day "
                 "FROM usage_usageevent AS e JOIN portal_organization AS o ON o.id = e.organization_id) AS ev")


def _bin_sql(largest: int) -> str:
    """usage.histogram.bin_of as SQL, exactly: bin_of never decreases with the latency, so each bin
    it reaches starts at the smallest whole millisecond it gives that bin (found in Python, with
    the fold's own arithmetic) and `width_bucket` over those starts finds an event's bin."""
    from usage.histogram import bin_of

    starts, bins = [], []
    for target in range(1, bin_of(max(largest, 1)) + 1):
        low, high = 1, max(largest, 1)
        if bin_of(high) < target:
            continue
        # The smallest latency whose bin is at least `target`.
        first = low + bisect.bisect_left(range(low, high + 1), target, key=bin_of)
        if bin_of(first) == target and (not starts or first > starts[-1]):
            starts.append(first)
            bins.append(target)
    if not starts:
        return "0"
    return (f"COALESCE((ARRAY[{', '.join(map(str, bins))}])[width_bucket(latency_ms, "
            f"ARRAY[{', '.join(map(str, starts))}])], 0)")


def backfill(apps, schema_editor):
    connection = schema_editor.connection
    if connection.vendor != "postgresql":
        _backfill_in_python(apps)
        return
    from usage.measures import MEASURES, Merge

    organization_daily = apps.get_model("usage", "UsageOrganizationDaily")
    stored = {field.column for field in organization_daily._meta.concrete_fields}
    # The measures this migration's table has (a later migration may add more).
    measures = [m for m in MEASURES if m.merge is not Merge.HISTOGRAM and m.name in stored]
    with connection.cursor() as cursor:
        cursor.execute("SELECT MAX(latency_ms) FROM usage_usageevent")
        (largest,) = cursor.fetchone()
        if largest is None:
            cursor.execute("INSERT INTO usage_usagekeydailyrows (organization_id, day, rows) "
                           "SELECT organization_id, day, COUNT(*) FROM usage_usagekeydaily GROUP BY 1, 2")
            return
        # One back-fill, not a planner setting for reads: room to hash every group in memory.
        cursor.execute("SET LOCAL work_mem = '256MB'")
        cursor.execute(f"""
            CREATE TEMP TABLE usage_backfill_bins ON COMMIT DROP AS
            SELECT organization_id, department_id, day, currency, {_bin_sql(int(largest))} AS bin,
                   CAST(COUNT(*) AS integer) AS n
            FROM {_LOCAL_EVENTS} GROUP BY 1, 2, 3, 4, 5""")
        cursor.execute("""
            UPDATE usage_usagedepartmentdaily AS d SET latency_bins = h.bins FROM (
                SELECT organization_id, department_id, day, currency,
                       usage_bins_dense(array_agg(bin ORDER BY bin), array_agg(n ORDER BY bin)) AS bins
                FROM usage_backfill_bins GROUP BY 1, 2, 3, 4) AS h
            WHERE d.organization_id = h.organization_id AND d.department_id = h.department_id
              AND d.day = h.day AND d.currency = h.currency""")
        columns = ", ".join(m.name for m in measures)
        aggregates = ", ".join(m.over_events("postgresql") for m in measures)
        cursor.execute(f"""
            INSERT INTO usage_usageorganizationdaily (organization_id, day, currency, {columns}, latency_bins)
            SELECT sums.*, h.bins FROM (
                SELECT organization_id, day, currency, {aggregates} FROM {_LOCAL_EVENTS} GROUP BY 1, 2, 3
            ) AS sums JOIN (
                SELECT organization_id, day, currency,
                       usage_bins_dense(array_agg(bin ORDER BY bin), array_agg(n ORDER BY bin)) AS bins
                FROM (SELECT organization_id, day, currency, bin, CAST(SUM(n) AS integer) AS n
                      FROM usage_backfill_bins GROUP BY 1, 2, 3, 4) AS per_bin
                GROUP BY 1, 2, 3
            ) AS h USING (organization_id, day, currency)""")
        cursor.execute("INSERT INTO usage_usagekeydailyrows (organization_id, day, rows) "
                       "SELECT organization_id, day, COUNT(*) FROM usage_usagekeydaily GROUP BY 1, 2")


def _backfill_in_python(apps):
    """SQLite (development databases): the new level and the department histograms folded in
    Python from the raw events, and every day's key-daily rows counted."""
    from usage.levels import DEPARTMENT_DAILY, ORGANIZATION_DAILY
    from usage.models import UsageEvent, UsageKeyDaily
    from usage.rollups import fold_events, organization_zones, recount_key_daily_rows

    apps.get_model("usage", "UsageDepartmentDaily").objects.all().delete()
    after = 0
    while chunk := list(UsageEvent.objects.filter(id__gt=after).order_by("id")[:5000]):
        fold_events(chunk, organization_zones({event.organization_id for event in chunk}), freshness=False,
                    only=(DEPARTMENT_DAILY, ORGANIZATION_DAILY))
        after = chunk[-1].pk
    recount_key_daily_rows(UsageKeyDaily.objects.values_list("organization_id", "day").distinct())


class Migration(migrations.Migration):

    dependencies = [
        ('portal', '0009_department_rate_limits'),
        ('usage', '0011_fold_queue'),
    ]

    operations = [
        migrations.AddField(
            model_name='usagedepartmentdaily',
            name='latency_bins',
            field=usage.models.LatencyBinsField(default=list),
        ),
        migrations.CreateModel(
            name='UsageKeyDailyRows',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('day', models.DateField()),
                ('rows', models.BigIntegerField(default=0)),
                ('organization', models.ForeignKey(db_constraint=False, db_index=False, on_delete=django.db.models.deletion.DO_NOTHING, related_name='+', to='portal.organization')),
            ],
            options={
                'constraints': [models.UniqueConstraint(fields=('organization', 'day'), name='usagekeydailyrows_key')],
            },
        ),
        migrations.CreateModel(
            name='UsageOrganizationDaily',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('currency', models.CharField(choices=[('CNY', 'Chinese yuan'), ('USD', 'US dollar'), ('VCU', 'Venice compute units'), ('DIEM', 'DIEM'), ('BUNDLED_CREDITS', 'Bundled credits')], max_length=16)),
                ('requests', models.PositiveBigIntegerField(default=0)),
                ('errors', models.PositiveBigIntegerField(default=0)),
                ('prompt_tokens', models.PositiveBigIntegerField(default=0)),
                ('completion_tokens', models.PositiveBigIntegerField(default=0)),
                ('cached_tokens', models.PositiveBigIntegerField(default=0)),
                ('cache_creation_tokens', models.PositiveBigIntegerField(default=0)),
                ('image_count', models.PositiveBigIntegerField(default=0)),
                ('video_seconds', models.PositiveBigIntegerField(default=0)),
                ('input_chars', models.PositiveBigIntegerField(default=0)),
                ('output_chars', models.PositiveBigIntegerField(default=0)),
                ('cost_units', models.BigIntegerField(default=0)),
                ('input_cost_units', models.BigIntegerField(default=0)),
                ('cache_read_cost_units', models.BigIntegerField(default=0)),
                ('cache_write_cost_units', models.BigIntegerField(default=0)),
                ('output_cost_units', models.BigIntegerField(default=0)),
                ('latency_sum_ms', models.PositiveBigIntegerField(default=0)),
                ('latency_min_ms', models.PositiveIntegerField(default=0)),
                ('latency_max_ms', models.PositiveIntegerField(default=0)),
                ('day', models.DateField()),
                ('latency_bins', usage.models.LatencyBinsField(default=list)),
                ('organization', models.ForeignKey(db_constraint=False, db_index=False, on_delete=django.db.models.deletion.DO_NOTHING, related_name='+', to='portal.organization')),
            ],
            options={
                'constraints': [models.UniqueConstraint(fields=('organization', 'day', 'currency'), name='usageorganizationdaily_key')],
            },
        ),
        migrations.RunPython(backfill, migrations.RunPython.noop),
    ]
