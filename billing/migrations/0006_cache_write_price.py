"""A cache-write price per model price (API.md §1). Null for every existing price: cache writes
are then rated at the input price, as they were while nothing reported them."""

import django.core.validators
from decimal import Decimal
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('billing', '0005_immutable_rows_trigger'),
    ]

    operations = [
        migrations.RemoveConstraint(
            model_name='price',
            name='price_amounts_not_negative',
        ),
        migrations.AddField(
            model_name='price',
            name='cache_write_per_mtok',
            field=models.DecimalField(blank=True, decimal_places=8, default=None, max_digits=20, null=True, validators=[django.core.validators.MinValueValidator(Decimal('0'))]),
        ),
        migrations.AddConstraint(
            model_name='price',
            constraint=models.CheckConstraint(condition=models.Q(('input_per_mtok__gte', 0), ('cached_input_per_mtok__gte', 0), models.Q(('cache_write_per_mtok__isnull', True), ('cache_write_per_mtok__gte', 0), _connector='OR'), ('output_per_mtok__gte', 0), ('per_image__gte', 0), ('per_video_second__gte', 0)), name='price_amounts_not_negative'),
        ),
    ]
