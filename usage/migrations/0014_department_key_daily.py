"""A level of usage per key and local day (whatever the member and model), back-filled from the
raw events already stored (bench/RESULTS.md, 2026-12-06: Venice's per-key analytics read about
114,000 key-daily rows for 30 days of the heaviest organization)."""

import django.db.models.deletion
from django.db import migrations, models

# An event's local day on its organization's clock, as the folds work it out (0007 did the same).
_LOCAL_EVENTS = ("(SELECT e.*, CAST(e.\"timestamp\" AT TIME ZONE o.timezone AS date) AS day "
                 "FROM usage_usageevent AS e JOIN portal_organization AS o ON o.id = e.organization_id) AS ev")


def backfill(apps, schema_editor):
    connection = schema_editor.connection
    if connection.vendor != "postgresql":
        # SQLite (development databases): folded in Python from the raw events.
        from usage.levels import DEPARTMENT_KEY_DAILY
        from usage.models import UsageEvent
        from usage.rollups import fold_events, organization_zones

        after = 0
        while chunk := list(UsageEvent.objects.filter(id__gt=after).order_by("id")[:5000]):
            fold_events(chunk, organization_zones({event.organization_id for event in chunk}), freshness=False,
                        only=(DEPARTMENT_KEY_DAILY,))
            after = chunk[-1].pk
        return
    from usage.measures import MEASURES, Merge

    stored = {field.column for field in apps.get_model("usage", "UsageDepartmentKeyDaily")._meta.concrete_fields}
    # The measures this migration's table has (a later migration may add more).
    measures = [m for m in MEASURES if m.merge is not Merge.HISTOGRAM and m.name in stored]
    with connection.cursor() as cursor:
        # One back-fill, not a planner setting for reads: room to hash every group in memory.
        cursor.execute("SET LOCAL work_mem = '256MB'")
        cursor.execute(f"""
            INSERT INTO usage_usagedepartmentkeydaily (organization_id, day, department_id, key_id, currency,
                                                       {', '.join(m.name for m in measures)})
            SELECT organization_id, day, department_id, key_id, currency,
                   {', '.join(m.over_events("postgresql") for m in measures)}
            FROM {_LOCAL_EVENTS} GROUP BY 1, 2, 3, 4, 5""")


class Migration(migrations.Migration):

    dependencies = [
        ('keys', '0002_upstreams'),
        ('portal', '0009_department_rate_limits'),
        ('usage', '0013_model_hourly'),
    ]

    operations = [
        migrations.CreateModel(
            name='UsageDepartmentKeyDaily',
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
                ('department', models.ForeignKey(db_constraint=False, db_index=False, on_delete=django.db.models.deletion.DO_NOTHING, related_name='+', to='portal.department')),
                ('key', models.ForeignKey(db_constraint=False, db_index=False, on_delete=django.db.models.deletion.DO_NOTHING, related_name='+', to='keys.inferencekey')),
                ('organization', models.ForeignKey(db_constraint=False, db_index=False, on_delete=django.db.models.deletion.DO_NOTHING, related_name='+', to='portal.organization')),
            ],
            options={
                'constraints': [models.UniqueConstraint(fields=('organization', 'day', 'department', 'key', 'currency'), name='usagedepartmentkeydaily_key')],
            },
        ),
        migrations.RunPython(backfill, migrations.RunPython.noop),
    ]
