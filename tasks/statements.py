"""The task record's hot statements, with their SQL built once per process.

Every enqueue inserts a record and every run claims and finishes one. Through
the ORM each of those statements is built, compiled and its row converted
anew, which cost more than the database work itself and was most of a no-op
task's time. Here the SQL text and the column converters are made once per
database alias and reused; values still go through each field's own
``get_db_prep_save`` and ``from_db_value``, so the stored data is exactly
what the ORM would store.

Only ``insert``, ``claim_returning`` and ``update_if_current`` live here: the
rest of the model's queries are rare and stay on the ORM.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from django.db import connections, router

if TYPE_CHECKING:
    from tasks.models import TaskRecord

RETURNING_VENDORS = ("sqlite", "postgresql")


def insert(record: TaskRecord) -> None:
    """INSERT a new record (every concrete field), as ``save()`` would."""
    model = type(record)
    alias = router.db_for_write(model, instance=record)
    connection = connections[alias]
    fields = model._meta.concrete_fields
    params = [
        field.get_db_prep_save(getattr(record, field.attname), connection)
        for field in fields
    ]
    with connection.cursor() as cursor:
        cursor.execute(_insert_sql(model, connection.vendor, alias), params)
    record._state.adding = False
    record._state.db = alias


def claim_returning(
    model: type[TaskRecord],
    record_id: str,
    worker_id: str,
    now: datetime,
    ready: str,
    running: str,
) -> TaskRecord | None:
    """READY -> RUNNING and the claimed row, in one statement (the caller
    checks ``supports_returning``)."""
    alias = router.db_for_write(model)
    connection = connections[alias]
    at = connection.ops.adapt_datetimefield_value(now)
    params = [running, at, at, at, worker_id, record_id, ready, at]
    with connection.cursor() as cursor:
        cursor.execute(_claim_sql(model, connection.vendor, alias), params)
        row = cursor.fetchone()
    if row is None:
        return None
    converters = _row_converters(model, alias)
    values = [
        _convert(value, column, funcs, connection)
        for value, (column, funcs) in zip(row, converters, strict=True)
    ]
    return model.from_db(alias, None, values)


def update_if_current(record: TaskRecord, names: Sequence[str], running: str) -> bool:
    """UPDATE ``names`` of a RUNNING record only while this attempt owns it."""
    model = type(record)
    alias = router.db_for_write(model, instance=record)
    connection = connections[alias]
    fields = [model._meta.get_field(name) for name in names]
    params = [
        field.get_db_prep_save(getattr(record, field.attname), connection)
        for field in fields
    ]
    params += [record.pk, running, record.attempts]
    sql = _update_sql(model, connection.vendor, alias, tuple(names))
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.rowcount > 0


def supports_returning(model: type[TaskRecord]) -> bool:
    return connections[router.db_for_write(model)].vendor in RETURNING_VENDORS


# --- SQL text and converters, cached per (model, vendor, alias) ---------------
# The alias keeps two databases of one vendor apart; the vendor is part of
# the key so tests that swap a connection's settings cannot reuse stale SQL.


@functools.cache
def _insert_sql(model, vendor: str, alias: str) -> str:
    quote = connections[alias].ops.quote_name
    fields = model._meta.concrete_fields
    columns = ", ".join(quote(field.column) for field in fields)
    marks = ", ".join(["%s"] * len(fields))
    table = quote(model._meta.db_table)
    # Identifiers come from the model's meta, never from input.
    return f"INSERT INTO {table} ({columns}) VALUES ({marks})"  # noqa: S608


_CLAIM_SQL = """
UPDATE {table} SET status = %s, attempts = attempts + 1,
    started_at = COALESCE(started_at, %s), last_attempted_at = %s,
    heartbeat_at = %s, claimed_by = %s, progress = 0, progress_message = ''
WHERE id = %s AND status = %s AND (run_after IS NULL OR run_after <= %s)
RETURNING {columns}
"""


@functools.cache
def _claim_sql(model, vendor: str, alias: str) -> str:
    quote = connections[alias].ops.quote_name
    columns = ", ".join(quote(field.column) for field in model._meta.concrete_fields)
    return _CLAIM_SQL.format(table=quote(model._meta.db_table), columns=columns)


@functools.cache
def _update_sql(model, vendor: str, alias: str, names: tuple[str, ...]) -> str:
    quote = connections[alias].ops.quote_name
    columns = [quote(model._meta.get_field(name).column) for name in names]
    assignments = ", ".join(f"{column} = %s" for column in columns)
    table = quote(model._meta.db_table)
    return (
        f"UPDATE {table} SET {assignments} "  # noqa: S608 (identifiers from meta)
        "WHERE id = %s AND status = %s AND attempts = %s"
    )


Converter = Callable[[Any, Any, Any], Any]


@functools.cache
def _row_converters(model, alias: str) -> list[tuple[Any, list[Converter]]]:
    """Per column, its expression and the backend's then the field's
    converters, as the compiler applies them to a selected column."""
    connection = connections[alias]
    table = model._meta.db_table
    converters = []
    for field in model._meta.concrete_fields:
        column = field.get_col(table)
        funcs = [
            *connection.ops.get_db_converters(column),
            *column.get_db_converters(connection),
        ]
        converters.append((column, funcs))
    return converters


def _convert(value, column, funcs: list[Converter], connection):
    for func in funcs:
        value = func(value, column, connection)
    return value
