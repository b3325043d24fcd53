"""Running a claimed record: call the task, then record how the attempt ended.

``run_sync`` (a worker slot's thread, a Celery pool process) and ``run_async``
(a coroutine task on the worker's event loop) are the only two ways; both
leave the outcome to tasks.lifecycle.

Whatever the task raises is its failure, SystemExit and KeyboardInterrupt
included: inside a worker they can only come from the task's own code (the
worker handles its signals on its event loop, and no slot is the main
thread), and they must not end the worker. A return value that is not JSON
data fails the attempt with the TypeError that says so, as Django's own
backend records it.
"""

from __future__ import annotations

import asyncio
from inspect import iscoroutinefunction

from asgiref.sync import sync_to_async
from django.tasks import TaskContext

from tasks import lifecycle
from tasks.context import running
from tasks.models import Status, TaskRecord


def run_sync(record: TaskRecord) -> Status | None:
    """Run a claimed record in this thread (a coroutine task on a new loop).
    Returns the record's new status; None if the attempt lost its record."""
    return finish(record, *call(record))


def call(record: TaskRecord) -> tuple[object, BaseException | None]:
    """Call a claimed record's task here: (its value as JSON data, None), or
    (None, what it raised). The worker records the outcome with ``finish``
    in the same transaction as its next claim."""
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


def finish(record: TaskRecord, value, error: BaseException | None) -> Status | None:
    """Record what ``call`` gave: the new status, or None if lost."""
    if error is not None:
        return lifecycle.fail(record, error)
    return Status.SUCCESSFUL if lifecycle.succeed(record, value) else None


async def run_async(record: TaskRecord) -> Status | None:
    """Run a claimed coroutine task on this loop.

    Cancelled with an exception as the message (``task.cancel(TimeLimitExceeded
    (...))``), the attempt fails with that exception; cancelled otherwise (its
    record was taken away, or the worker is going down), it records nothing.
    """
    try:
        task = record.get_task()
        with running(record):
            value = await task.func(*_arguments(record, task), **record.kwargs)
        value = lifecycle.as_json(value, "return value")
    except asyncio.CancelledError as cancelled:
        reason = cancelled.args[0] if cancelled.args else None
        if not isinstance(reason, BaseException):
            raise
        return await _in_thread(lifecycle.fail, record, reason)
    except BaseException as error:
        return await _in_thread(lifecycle.fail, record, error)
    written = await _in_thread(lifecycle.succeed, record, value)
    return Status.SUCCESSFUL if written else None


def is_coroutine_task(record: TaskRecord) -> bool:
    try:
        return iscoroutinefunction(record.get_task().func)
    except Exception:
        return False  # run_sync records why it cannot be run


def _arguments(record: TaskRecord, task) -> list:
    if task.takes_context:
        return [TaskContext(task_result=record.to_task_result(task)), *record.args]
    return list(record.args)


async def _in_thread(func, *args):
    return await sync_to_async(func, thread_sensitive=False)(*args)
