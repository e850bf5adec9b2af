"""Raw psycopg cursors on Django's own connection, for what Django's cursors cannot do on
PostgreSQL: bind parameters on the server (arrays sent and results read in binary) and COPY.

Every such cursor in usage/ comes from `psycopg_cursor()`, which runs in the connection's
current transaction and translates database errors as Django's cursors do: psycopg's errors
become django.db's (IntegrityError, OperationalError, ...), and a broken connection is marked so
that it is not reused. Callers and `transaction.atomic` then see the same exceptions whichever
cursor ran the statement.
"""

import contextlib
from collections.abc import Iterator

import psycopg
from django.db import connection

__all__ = ["psycopg_cursor"]


@contextlib.contextmanager
def psycopg_cursor() -> Iterator[psycopg.Cursor]:
    """A server-binding psycopg cursor on Django's connection (PostgreSQL only)."""
    connection.ensure_connection()
    with connection.wrap_database_errors, psycopg.Cursor(connection.connection) as cursor:
        yield cursor
