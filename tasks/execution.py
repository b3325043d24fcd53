"""Running a claimed record: call the task, then record how the attempt ended.

``call`` (a worker slot's thread, a Celery pool process) and ``call_async``
(a coroutine task on the worker's event loop) run the task; ``write_outcome``
records how it ended through tasks.lifecycle, and keeps that outcome through
a database outage until it is written (``run_sync`` and ``run_async`` do
both).

Whatever the task raises is its failure, SystemExit and KeyboardInterrupt
included: inside a worker they can only come from the task's own code (the
worker handles its signals on its event loop, and no slot is the main
thread), and they must not end the worker. A return value that is not JSON
data fails the attempt with the TypeError that says so, as Django's own
backend records it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from copy import copy
from inspect import iscoroutinefunction

from asgiref.sync import sync_to_async
from django.db import transaction
from django.tasks import TaskContext

from tasks import lifecycle, outage
from tasks.context import running
from tasks.models import Status, TaskRecord


def run_sync(record: TaskRecord) -> Status | None:
    """Run a claimed record in this thread (a coroutine task on a new loop).
    Returns the record's new status; None if the attempt lost its record."""
    return write_outcome(record, *call(record))[0]


def call(record: TaskRecord) -> tuple[object, BaseException | None]:
    """Call a claimed record's task here: (its value as JSON data, None), or
    (None, what it raised). ``write_outcome`` records it."""
    try:
        task = record.get_task()
        args = _arguments(record, task)
        with running(record):
            if iscoroutinefunction(task.func):
                value = asyncio.run(task.func(*args, **record.kwargs))
            else:
                value = task.func(*args, **record.kwargs)
        return lifecycle.as_json(value, "return value"), None
    except BaseException as error:
        return None, error


async def call_async(record: TaskRecord) -> tuple[object, BaseException | None]:
    """``call`` for a coroutine task, on this loop.

    Cancelled with an exception as the message (``task.cancel(TimeLimitExceeded
    (...))``), the attempt failed with that exception; cancelled otherwise (its
    record was taken away, or the worker is going down), CancelledError goes
    on and nothing is to be recorded.
    """
    try:
        task = record.get_task()
        with running(record):
            value = await task.func(*_arguments(record, task), **record.kwargs)
        return lifecycle.as_json(value, "return value"), None
    except asyncio.CancelledError as cancelled:
        reason = cancelled.args[0] if cancelled.args else None
        if not isinstance(reason, BaseException):
            raise
        return None, reason
    except BaseException as error:
        return None, error


async def run_async(record: TaskRecord) -> Status | None:
    """``run_sync`` for a coroutine task, on this loop (the write in a thread)."""
    value, error = await call_async(record)
    write = sync_to_async(write_outcome, thread_sensitive=False)
    return (await write(record, value, error))[0]


def write_outcome[T](
    record: TaskRecord,
    value,
    error: BaseException | None,
    then: Callable[[], T] | None = None,
) -> tuple[Status | None, T | None]:
    """Record what ``call`` gave: (the new status, or None if the attempt no
    longer owned its record; what ``then`` returned).

    ``then`` runs in the same transaction (a worker claims its next record
    with the outcome: one commit per task). Through a database outage the
    write is tried again until it lands (tasks.outage), each time from the
    record as it was claimed, so a retry writes exactly what the first try
    meant to; the conditional write makes a try that had committed after all
    (the server failed as it answered) change nothing the second time.
    """

    def write() -> tuple[Status | None, T | None]:
        if then is None:
            return finish(copy(record), value, error), None
        with transaction.atomic():
            return finish(copy(record), value, error), then()

    return outage.until_written(write)


def finish(record: TaskRecord, value, error: BaseException | None) -> Status | None:
    """Record what ``call`` gave, once: the new status, or None if lost."""
    if error is not None:
        return lifecycle.fail(record, error)
    return Status.SUCCESSFUL if lifecycle.succeed(record, value) else None


def is_coroutine_task(record: TaskRecord) -> bool:
    try:
        return iscoroutinefunction(record.get_task().func)
    except Exception:
        return False  # run_sync records why it cannot be run


def _arguments(record: TaskRecord, task) -> list:
    if task.takes_context:
        return [TaskContext(task_result=record.to_task_result(task)), *record.args]
    return list(record.args)
