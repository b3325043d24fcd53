"""The task record's hot statements, with their SQL built once per process.

Every enqueue inserts a record and every run claims and finishes one. Through
the ORM each of those statements is built, compiled and its row converted
anew, which cost more than the database work itself and was most of a no-op
task's time. Here the SQL text and the column converters are made once per
database alias and reused; values still go through each field's own
``get_db_prep_save`` and ``from_db_value``, so the stored data is exactly
what the ORM would store.

Both claims are one ``UPDATE ... RETURNING`` statement, so a claim is atomic
on its own: on SQLite the statement holds the write lock from its first read
to its write; on PostgreSQL the candidate row is locked with ``FOR UPDATE
SKIP LOCKED``, so concurrent claimers take different rows instead of
queueing behind one. The READY status is written into the SQL text, not
bound, so that both planners can use the partial index on READY rows.

Only the statements of ``tasks.lifecycle``'s hot paths live here; rarer
queries stay on the ORM.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from django.db import connections, router
from django.tasks import TaskResultStatus

if TYPE_CHECKING:
    from tasks.models import TaskRecord

SUPPORTED_VENDORS = ("sqlite", "postgresql")
READY, RUNNING = TaskResultStatus.READY.value, TaskResultStatus.RUNNING.value
# (backend alias, queue name) pairs a worker serves.
Targets = tuple[tuple[str, str], ...]


def insert(record: TaskRecord, *, if_absent: bool = False) -> bool:
    """INSERT a new record (every concrete field), as ``save()`` would. With
    ``if_absent``, a record that a unique constraint refuses (an equal unique
    job is active) is not written: returns False."""
    model = type(record)
    alias = router.db_for_write(model, instance=record)
    connection = connections[alias]
    params = _prepared(record, model._meta.concrete_fields, connection)
    with connection.cursor() as cursor:
        cursor.execute(_insert_sql(model, connection.vendor, alias, if_absent), params)
        written = cursor.rowcount != 0
    if written:
        record._state.adding = False
        record._state.db = alias
    return written


def insert_many(records: Sequence[TaskRecord], *, if_absent: bool = False) -> set[str]:
    """INSERT ``records`` in one statement, whatever their number: a value the
    records share is bound once; the others travel as one JSON document of
    rows on SQLite, as one array per column on PostgreSQL, so no limit on
    bound parameters splits it. Returns the ids written (with
    ``if_absent``, those no unique constraint refused)."""
    if not records:
        return set()
    model = type(records[0])
    alias = router.db_for_write(model, instance=records[0])
    connection = connections[alias]
    columns = [
        _prepared_column(records, field, connection)
        for field in model._meta.concrete_fields
    ]
    shared = tuple(not isinstance(column, list) for column in columns)
    params = [column.value for column in columns if not isinstance(column, list)]
    varying = [column for column in columns if isinstance(column, list)]
    if connection.vendor == "postgresql":
        params += varying
    else:
        params.append(json.dumps(list(zip(*varying, strict=True))))
    sql = _insert_many_sql(model, connection.vendor, alias, if_absent, shared)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        written = {row[0] for row in cursor.fetchall()}
    for record in records:
        if record.pk in written:
            record._state.adding = False
            record._state.db = alias
    return written


def claim(
    model: type[TaskRecord], record_id: str, worker_id: str, now: datetime
) -> TaskRecord | None:
    """READY -> RUNNING for the record ``record_id`` if it is due."""
    alias = router.db_for_write(model)
    connection = connections[alias]
    at = connection.ops.adapt_datetimefield_value(now)
    params = [at, at, at, worker_id, record_id, at]
    return _claim_row(model, alias, _claim_sql(model, connection.vendor, alias), params)


def claim_next(
    model: type[TaskRecord], targets: Targets, worker_id: str, now: datetime
) -> TaskRecord | None:
    """READY -> RUNNING for the most urgent due record of ``targets``
    (highest priority, then the longest available)."""
    alias = router.db_for_write(model)
    connection = connections[alias]
    at = connection.ops.adapt_datetimefield_value(now)
    params = [at, at, at, worker_id]
    for backend, queue in targets:
        params += [backend, queue, at]
    sql = _claim_next_sql(model, connection.vendor, alias, len(targets))
    return _claim_row(model, alias, sql, params)


def update_if_current(record: TaskRecord, names: Sequence[str]) -> bool:
    """UPDATE ``names`` of a RUNNING record only while this attempt owns it,
    bumping its ``sequence`` (read back into ``record``)."""
    model = type(record)
    alias = router.db_for_write(model, instance=record)
    connection = connections[alias]
    fields = [model._meta.get_field(name) for name in names]
    params = [*_prepared(record, fields, connection), record.pk, record.attempts]
    sql = _update_sql(model, connection.vendor, alias, tuple(names))
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    if row is None:
        return False
    record.sequence = row[0]
    return True


def vendor(model: type[TaskRecord]) -> str:
    return connections[router.db_for_write(model)].vendor


def _prepared(record: TaskRecord, fields, connection) -> list:
    return [
        field.get_db_prep_save(getattr(record, field.attname), connection)
        for field in fields
    ]


def _prepared_column(records: Sequence[TaskRecord], field, connection):
    """One field's values of ``records``, prepared for the database: one value
    when they share the very same object (most fields of one enqueue_many
    do: identity, not equality, so 1 and 1.0 stay apart), else a list."""
    values = [getattr(record, field.attname) for record in records]
    first = values[0]
    # (The primary key always varies: it gives json_each or UNNEST its rows.)
    if not field.primary_key and all(value is first for value in values):
        return _Shared(field.get_db_prep_save(first, connection))
    return [field.get_db_prep_save(value, connection) for value in values]


class _Shared:
    """A prepared value bound once for every row."""

    __slots__ = ("value",)

    def __init__(self, value) -> None:
        self.value = value


def _claim_row(model, alias: str, sql: str, params: list) -> TaskRecord | None:
    connection = connections[alias]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    if row is None:
        return None
    converters = _row_converters(model, alias)
    values = [
        _convert(value, column, funcs, connection)
        for value, (column, funcs) in zip(row, converters, strict=True)
    ]
    return model.from_db(alias, None, values)


# --- SQL text and converters, cached per (model, vendor, alias) ---------------
# The alias keeps two databases of one vendor apart; the vendor is part of
# the key so tests that swap a connection's settings cannot reuse stale SQL.
# Identifiers come from the model's meta and statuses are constants, never
# input (pyproject.toml waives S608 for this module).


@functools.cache
def _insert_sql(model, vendor: str, alias: str, if_absent: bool) -> str:
    table, columns = _names(model, alias)
    marks = ", ".join(["%s"] * len(model._meta.concrete_fields))
    return f"INSERT INTO {table} ({columns}) VALUES ({marks})" + _absent(if_absent)


@functools.cache
def _insert_many_sql(
    model, vendor: str, alias: str, if_absent: bool, shared: tuple[bool, ...]
) -> str:
    table, columns = _names(model, alias)
    fields = model._meta.concrete_fields
    connection = connections[alias]
    # Column types without their length, as Django's own bulk_create does
    # (varchar[] rather than varchar(32)[]).
    types = [field.db_type(connection).split("(")[0] for field in fields]
    if vendor == "postgresql":
        # A shared value as one typed parameter, the others one array each.
        varying = [t for t, one in zip(types, shared, strict=True) if not one]
        arrays = ", ".join(f"%s::{t}[]" for t in varying)
        names = iter(f"u.c{n}" for n in range(len(varying)))
        select = ", ".join(
            f"%s::{t}" if one else next(names)
            for t, one in zip(types, shared, strict=True)
        )
        aliases = ", ".join(f"c{n}" for n in range(len(varying)))
        rows = f"SELECT {select} FROM UNNEST({arrays}) AS u({aliases})"
    else:
        # Each row an array of its varying values in one JSON document.
        # (WHERE true: SQLite's grammar needs it before ON CONFLICT.)
        positions = iter(range(len(fields)))
        select = ", ".join(
            "%s" if one else f"json_extract(value, '$[{next(positions)}]')"
            for one in shared
        )
        rows = f"SELECT {select} FROM json_each(%s) WHERE true"
    pk = connection.ops.quote_name(model._meta.pk.column)
    return (
        f"INSERT INTO {table} ({columns}) {rows}"
        + _absent(if_absent)
        + f" RETURNING {pk}"
    )


def _absent(if_absent: bool) -> str:
    # No conflict target: the only constraint a new record can meet is the
    # unique-job one (ids are 128 random bits).
    return " ON CONFLICT DO NOTHING" if if_absent else ""


_TAKE = f"""
UPDATE {{table}} SET status = '{RUNNING}', attempts = attempts + 1,
    started_at = COALESCE(started_at, %s), last_attempted_at = %s,
    heartbeat_at = %s, claimed_by = %s, progress = 0, progress_message = '',
    sequence = sequence + 1
"""


@functools.cache
def _claim_sql(model, vendor: str, alias: str) -> str:
    table, columns = _names(model, alias)
    return (
        _TAKE.format(table=table)
        + f"WHERE id = %s AND status = '{READY}' AND available_at <= %s "
        + f"AND {_within_limit(table, table)} RETURNING {columns}"
    )


def _within_limit(table: str, row: str) -> str:
    """The candidate ``row`` (a name for the table) is not limited, or its
    concurrency key is not full: fewer than its limit RUNNING. The full keys
    are one uncorrelated subquery (computed once per statement, from the
    partial index on limited RUNNING rows: its WHERE repeats the index's),
    so passing over a backlog of a full key's records costs a lookup each.
    On PostgreSQL two claims can both see room: tasks.limits checks again."""
    return (
        f"({row}.concurrency_limit IS NULL OR {row}.concurrency_key NOT IN ("
        f"SELECT busy.concurrency_key FROM {table} AS busy "
        f"WHERE busy.status = '{RUNNING}' AND busy.concurrency_limit IS NOT NULL "
        "GROUP BY busy.concurrency_key "
        "HAVING COUNT(*) >= MIN(busy.concurrency_limit)))"
    )


@functools.cache
def _claim_next_sql(model, vendor: str, alias: str, count: int) -> str:
    table, columns = _names(model, alias)
    if count == 1:
        pick = _best_of_queue(table, vendor, "id")
    else:
        # One indexed LIMIT 1 per queue, then the best of those few rows: a
        # single ORDER BY over several queues would sort every waiting row.
        arm = _best_of_queue(table, vendor, "id, priority, available_at")
        arms = " UNION ALL ".join(
            f"SELECT * FROM ({arm}) AS arm{n}" for n in range(count)
        )
        pick = f"SELECT id FROM ({arms}) AS candidates {_MOST_URGENT}"
    return (
        _TAKE.format(table=table)
        + f"WHERE status = '{READY}' AND id = ({pick}) RETURNING {columns}"
    )


_MOST_URGENT = "ORDER BY priority DESC, available_at LIMIT 1"


def _best_of_queue(table: str, vendor: str, select: str) -> str:
    """The most urgent due READY row of one (backend, queue)."""
    # SKIP LOCKED: a row another claimer is taking is passed over, not waited for.
    lock = " FOR UPDATE SKIP LOCKED" if vendor == "postgresql" else ""
    return (
        f"SELECT {select} FROM {table} AS waiting "
        f"WHERE status = '{READY}' AND backend = %s AND queue_name = %s "
        f"AND available_at <= %s AND {_within_limit(table, 'waiting')} "
        f"{_MOST_URGENT}{lock}"
    )


@functools.cache
def _update_sql(model, vendor: str, alias: str, names: tuple[str, ...]) -> str:
    quote = connections[alias].ops.quote_name
    columns = [quote(model._meta.get_field(name).column) for name in names]
    assignments = ", ".join(f"{column} = %s" for column in columns)
    table = quote(model._meta.db_table)
    sequence = quote(model._meta.get_field("sequence").column)
    return (
        f"UPDATE {table} SET {assignments}, {sequence} = {sequence} + 1 "
        f"WHERE id = %s AND status = '{RUNNING}' AND attempts = %s "
        f"RETURNING {sequence}"
    )


def _names(model, alias: str) -> tuple[str, str]:
    quote = connections[alias].ops.quote_name
    columns = ", ".join(quote(field.column) for field in model._meta.concrete_fields)
    return quote(model._meta.db_table), columns


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
