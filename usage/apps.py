from django.apps import AppConfig
from django.db.backends.signals import connection_created

from usage.histogram import add_bins_json


def _register_sqlite_functions(sender, connection, **kwargs) -> None:
    if connection.vendor == "sqlite":
        # The rollup upserts merge histograms in SQL; PostgreSQL gets the same function from a migration.
        connection.connection.create_function("usage_bins_add", 2, add_bins_json, deterministic=True)


class UsageConfig(AppConfig):
    name = "usage"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        connection_created.connect(_register_sqlite_functions, dispatch_uid="usage_sqlite_functions")
