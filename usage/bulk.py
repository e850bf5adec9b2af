"""Set-based multi-row writes, one statement per batch, on SQLite and PostgreSQL.

On PostgreSQL the rows travel as one array per column and are zipped back by `unnest`: the
statement has one placeholder per column whatever the batch size, so the driver neither parses
a query with thousands of placeholders nor sends thousands of parameters. SQLite gets a plain
multi-row VALUES list, chunked under its bound-parameter limit.
"""

from collections.abc import Iterable, Sequence
from typing import Any

from django.db import connection

from usage.db import psycopg_cursor

# SQLite's limit is 32,766 bound parameters per statement.
SQLITE_MAX_PARAMS = 30_000


def write_rows(
    table: str,
    columns: Sequence[str],
    types: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    conflict: str,
    returning: str | None = None,
) -> list[tuple]:
    """INSERT `rows` (sequences in `columns` order) into `table` with the given `ON CONFLICT`
    clause; `types` are the PostgreSQL column types (for the arrays). Returns RETURNING rows."""
    if not rows:
        return []
    quote = connection.ops.quote_name
    column_list = ", ".join(quote(c) for c in columns)
    tail = f" ON CONFLICT {conflict}" + (f" RETURNING {returning}" if returning else "")
    if connection.vendor == "postgresql":
        arrays = [list(values) for values in zip(*rows, strict=True)]
        # unnest() would flatten an array of arrays, so array columns travel as text literals
        # and are cast back after unnesting.
        nested = [kind.endswith("[]") for kind in types]
        for index in (i for i, is_array in enumerate(nested) if is_array):
            arrays[index] = ["{" + ",".join(map(str, value)) + "}" for value in arrays[index]]
        unnested = ", ".join("%b::text[]" if is_array else f"%b::{kind}[]"  # %b: sent in binary
                             for kind, is_array in zip(types, nested, strict=True))
        outputs = ", ".join(f"c{i}::{kind}" if is_array else f"c{i}"
                            for i, (kind, is_array) in enumerate(zip(types, nested, strict=True)))
        names = ", ".join(f"c{i}" for i in range(len(types)))
        # A server-side-binding cursor, sending the arrays in binary: Django's client-side
        # binding would quote every element as text.
        with psycopg_cursor() as cursor:
            cursor.execute(f"INSERT INTO {quote(table)} ({column_list}) SELECT {outputs} "
                           f"FROM unnest({unnested}) AS u({names}){tail}", arrays)
            return list(cursor.fetchall()) if returning else []
    results: list[tuple] = []
    with connection.cursor() as cursor:
        placeholder = "(" + ", ".join(["%s"] * len(columns)) + ")"
        per_statement = max(1, SQLITE_MAX_PARAMS // len(columns))
        for start in range(0, len(rows), per_statement):
            chunk = rows[start : start + per_statement]
            cursor.execute(f"INSERT INTO {quote(table)} ({column_list}) VALUES "
                           + ", ".join([placeholder] * len(chunk)) + tail,
                           [value for row in chunk for value in row])
            if returning:
                results.extend(cursor.fetchall())
    return results


def column_types(model, columns: Sequence[str]) -> list[str]:
    """The database types of a model's columns, for write_rows."""
    by_column = {field.column: field for field in model._meta.concrete_fields}
    return [by_column[column].db_type(connection) or by_column[column].rel_db_type(connection)
            for column in columns]


def stored_rows[Event](rows: Sequence[Event], returned: Iterable[tuple[int, str]]) -> list[Event]:
    """The rows that `INSERT ... ON CONFLICT (request_id) DO NOTHING RETURNING id, request_id`
    really stored, matched by request_id, each with its new id set as `pk`."""
    by_request_id = {row.request_id: row for row in rows}
    stored = []
    for row_id, request_id in returned:
        row = by_request_id[request_id]
        row.pk = row_id
        stored.append(row)
    return stored
