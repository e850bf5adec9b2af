"""Cache writes (API.md §1, §2): the event's cache_creation_tokens and the cost of writing them,
and both summed at every rollup level. Events stored before had no cache writes, so 0 is exact
for them and for every rollup row (adding a column with a constant default rewrites no table on
PostgreSQL)."""

from decimal import Decimal
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('usage', '0009_percentiles'),
    ]

    operations = [
        migrations.AddField(
            model_name='usagedaily',
            name='cache_creation_tokens',
            field=models.PositiveBigIntegerField(default=0),
        ),
        migrations.AddField(
            model_name='usagedaily',
            name='cache_write_cost_units',
            field=models.BigIntegerField(default=0),
        ),
        migrations.AddField(
            model_name='usagedepartmentdaily',
            name='cache_creation_tokens',
            field=models.PositiveBigIntegerField(default=0),
        ),
        migrations.AddField(
            model_name='usagedepartmentdaily',
            name='cache_write_cost_units',
            field=models.BigIntegerField(default=0),
        ),
        migrations.AddField(
            model_name='usageevent',
            name='cache_creation_tokens',
            field=models.PositiveBigIntegerField(default=0),
        ),
        migrations.AddField(
            model_name='usageevent',
            name='cache_write_cost',
            field=models.DecimalField(decimal_places=8, default=Decimal('0'), max_digits=20),
        ),
        migrations.AddField(
            model_name='usagefine15',
            name='cache_creation_tokens',
            field=models.PositiveBigIntegerField(default=0),
        ),
        migrations.AddField(
            model_name='usagefine15',
            name='cache_write_cost_units',
            field=models.BigIntegerField(default=0),
        ),
        migrations.AddField(
            model_name='usagehourly',
            name='cache_creation_tokens',
            field=models.PositiveBigIntegerField(default=0),
        ),
        migrations.AddField(
            model_name='usagehourly',
            name='cache_write_cost_units',
            field=models.BigIntegerField(default=0),
        ),
        migrations.AddField(
            model_name='usagekeydaily',
            name='cache_creation_tokens',
            field=models.PositiveBigIntegerField(default=0),
        ),
        migrations.AddField(
            model_name='usagekeydaily',
            name='cache_write_cost_units',
            field=models.BigIntegerField(default=0),
        ),
        migrations.AddField(
            model_name='usagemodeldaily',
            name='cache_creation_tokens',
            field=models.PositiveBigIntegerField(default=0),
        ),
        migrations.AddField(
            model_name='usagemodeldaily',
            name='cache_write_cost_units',
            field=models.BigIntegerField(default=0),
        ),
    ]
