"""The durable queue of unfolded batches (usage/folding.py): ingestion commits the raw events and
one row per organization of the batch; a folder folds them into every level and deletes the row
in the same transaction."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("portal", "0001_initial"),
        ("usage", "0010_cache_creation_tokens"),
    ]

    operations = [
        migrations.CreateModel(
            name="UsageFoldQueue",
            fields=[
                ("id", models.BigAutoField(primary_key=True, serialize=False)),
                ("event_ids", models.JSONField()),
                ("events", models.PositiveIntegerField()),
                ("queued_at", models.DateTimeField()),
                ("organization", models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name="+",
                                                   to="portal.organization")),
            ],
        ),
    ]
