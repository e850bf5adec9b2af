"""Each local hour's count of breakdown groups (department, key, member, model), counted from the
fine level for every hour the hourly level has (bench/RESULTS.md, 2026-12-06: the 7-day hourly
breakdown spent 76 of its 100 ms hashing 140,000 fine rows for its total)."""

import django.db.models.deletion
from django.db import migrations, models


def backfill(apps, schema_editor):
    from usage.rollups import organization_zones, recount_hour_groups

    hours = list(apps.get_model("usage", "UsageHourly").objects.values_list("organization_id", "hour").distinct())
    zones = organization_zones({organization_id for organization_id, _hour in hours})
    # Rollups carry no foreign key: rows of an organization since deleted have no clock to count by.
    recount_hour_groups([(organization_id, hour) for organization_id, hour in hours if organization_id in zones], zones)


class Migration(migrations.Migration):

    dependencies = [
        ('portal', '0009_department_rate_limits'),
        ('usage', '0014_department_key_daily'),
    ]

    operations = [
        migrations.CreateModel(
            name='UsageHourGroups',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('hour', models.BigIntegerField()),
                ('groups', models.BigIntegerField(default=0)),
                ('organization', models.ForeignKey(db_constraint=False, db_index=False, on_delete=django.db.models.deletion.DO_NOTHING, related_name='+', to='portal.organization')),
            ],
            options={
                'constraints': [models.UniqueConstraint(fields=('organization', 'hour'), name='usagehourgroups_key')],
            },
        ),
        migrations.RunPython(backfill, migrations.RunPython.noop),
    ]
