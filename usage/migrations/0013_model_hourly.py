"""A level of usage by model per hour of the organization's clock, back-filled from the raw events
already stored (bench/RESULTS.md, 2026-12-06: Weave's 7 days in 6-hour buckets by model)."""

import django.db.models.deletion
from django.db import migrations, models

# Each event's local hour on its organization's clock, keyed as the folds key it: the hour's first
# UTC epoch second (usage.levels.LOCAL_HOUR; 0007 back-filled the peaks the same way).
_LOCAL_EVENTS = ("(SELECT e.*, second - (second + utc_offset) % 3600 AS hour FROM (SELECT e.*, "
                 "CAST(FLOOR(date_part('epoch', e.\"timestamp\")) AS BIGINT) AS second, "
                 "CAST(date_part('epoch', e.\"timestamp\" AT TIME ZONE o.timezone) "
                 "- date_part('epoch', e.\"timestamp\" AT TIME ZONE 'UTC') AS BIGINT) AS utc_offset "
                 "FROM usage_usageevent AS e JOIN portal_organization AS o ON o.id = e.organization_id) AS e) AS ev")


def backfill(apps, schema_editor):
    connection = schema_editor.connection
    if connection.vendor != "postgresql":
        # SQLite (development databases): folded in Python from the raw events.
        from usage.levels import MODEL_HOURLY
        from usage.models import UsageEvent
        from usage.rollups import fold_events, organization_zones

        after = 0
        while chunk := list(UsageEvent.objects.filter(id__gt=after).order_by("id")[:5000]):
            fold_events(chunk, organization_zones({event.organization_id for event in chunk}), freshness=False,
                        only=(MODEL_HOURLY,))
            after = chunk[-1].pk
        return
    from usage.measures import MEASURES, Merge

    stored = {field.column for field in apps.get_model("usage", "UsageModelHourly")._meta.concrete_fields}
    # The measures this migration's table has (a later migration may add more).
    measures = [m for m in MEASURES if m.merge is not Merge.HISTOGRAM and m.name in stored]
    with connection.cursor() as cursor:
        # One back-fill, not a planner setting for reads: room to hash every group in memory.
        cursor.execute("SET LOCAL work_mem = '256MB'")
        cursor.execute(f"""
            INSERT INTO usage_usagemodelhourly (organization_id, hour, model_id, currency,
                                                {', '.join(m.name for m in measures)})
            SELECT organization_id, hour, model_id, currency, {', '.join(m.over_events("postgresql") for m in measures)}
            FROM {_LOCAL_EVENTS} GROUP BY 1, 2, 3, 4""")


class Migration(migrations.Migration):

    dependencies = [
        ('billing', '0007_model_max_output_tokens'),
        ('portal', '0009_department_rate_limits'),
        ('usage', '0012_daily_histograms'),
    ]

    operations = [
        migrations.CreateModel(
            name='UsageModelHourly',
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
                ('hour', models.BigIntegerField()),
                ('model', models.ForeignKey(db_constraint=False, db_index=False, on_delete=django.db.models.deletion.DO_NOTHING, related_name='+', to='billing.model')),
                ('organization', models.ForeignKey(db_constraint=False, db_index=False, on_delete=django.db.models.deletion.DO_NOTHING, related_name='+', to='portal.organization')),
            ],
            options={
                'constraints': [models.UniqueConstraint(fields=('organization', 'hour', 'model', 'currency'), name='usagemodelhourly_key')],
            },
        ),
        migrations.RunPython(backfill, migrations.RunPython.noop),
    ]
