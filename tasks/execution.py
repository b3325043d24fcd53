"""Running one task record: claim, call, heart-beat, record the outcome.

Shared by the Channels worker (async) and the Celery task (sync), so both
transports give a record the same life. A claim is a conditional update, so a
duplicate delivery never runs a task twice at once.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from inspect import iscoroutinefunction
from traceback import format_exception

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import close_old_connections, connections
from django.tasks import TaskContext
from django.tasks.signals import task_finished, task_started
from django.utils import timezone
from django.utils.json import normalize_json

from tasks import events
from tasks.context import running
from tasks.exceptions import ResultNotSerializable
from tasks.models import Status, TaskRecord

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    """What became of one delivery."""

    record_id: str
    status: str  # "skipped" (not claimed), SUCCESSFUL, FAILED or READY (retry)
    retry_at: datetime | None = None


def heartbeat_interval() -> float:
    return settings.TASKS_HEARTBEAT_SECONDS


async def arun(record_id: str, worker_id: str) -> Outcome:
    """Run a record from the worker's event loop.

    A coroutine task runs on this loop; a sync task runs, with its claim and
    outcome, in one worker thread (one thread hop per task), so the loop stays
    free to receive and heart-beat.
    """
    record = await sync_to_async(_claim, thread_sensitive=False)(record_id, worker_id)
    if record is None:
        return Outcome(record_id, "skipped")
    if not iscoroutinefunction(record.get_task().func):
        return await sync_to_async(_run_claimed, thread_sensitive=False)(record)
    await events.apublish(record)
    beat = asyncio.create_task(_aheartbeat(record))
    try:
        with running(record):
            value, error = await _acall(record)
    finally:
        beat.cancel()
    outcome = await sync_to_async(_finish, thread_sensitive=False)(record, value, error)
    await events.apublish(record)
    return outcome


def run(record_id: str, worker_id: str) -> Outcome:
    """Run a record in this thread (the Celery transport)."""
    record = _claim(record_id, worker_id)
    if record is None:
        return Outcome(record_id, "skipped")
    return _run_claimed(record)


def _run_claimed(record: TaskRecord) -> Outcome:
    events.publish(record)
    stop = threading.Event()
    beat = threading.Thread(target=_heartbeat_thread, args=(record, stop), daemon=True)
    beat.start()
    try:
        with running(record):
            value, error = _call(record)
    finally:
        stop.set()
        beat.join()
    outcome = _finish(record, value, error)
    events.publish(record)
    return outcome


def _claim(record_id: str, worker_id: str) -> TaskRecord | None:
    close_old_connections()  # drops broken or aged connections only
    record = TaskRecord.claim(record_id, worker_id)
    if record is not None:
        task_started.send(TaskRecord, task_result=record.to_task_result())
    return record


async def _acall(record: TaskRecord):
    task = record.get_task()
    try:
        return await task.func(*_arguments(record, task), **record.kwargs), None
    except (KeyboardInterrupt, SystemExit, asyncio.CancelledError):
        raise
    except BaseException as error:
        return None, error


def _call(record: TaskRecord):
    task = record.get_task()
    args = _arguments(record, task)
    try:
        if iscoroutinefunction(task.func):
            value = asyncio.run(task.func(*args, **record.kwargs))
        else:
            value = task.func(*args, **record.kwargs)
        return value, None
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as error:
        return None, error


def _arguments(record: TaskRecord, task) -> list:
    if task.takes_context:
        return [TaskContext(task_result=record.to_task_result()), *record.args]
    return list(record.args)


def _finish(record: TaskRecord, value, error: BaseException | None) -> Outcome:
    """Store the outcome of the attempt that ``record`` holds."""
    if error is None:
        try:
            value = _json_value(value)
        except ResultNotSerializable as bad:
            error = bad
    if error is None:
        record.set_successful(value)
        outcome = Outcome(record.id, Status.SUCCESSFUL)
    else:
        task = record.get_task()
        retry_at = None
        if task.should_retry(error, record.attempts):
            delay = task.retry_delay(record.attempts)
            retry_at = timezone.now() + timedelta(seconds=delay)
        record.set_failed(_error_dict(error), retry_at=retry_at)
        outcome = Outcome(record.id, record.status, retry_at)
    task_finished.send(TaskRecord, task_result=record.to_task_result())
    return outcome


def _json_value(value):
    try:
        return normalize_json(value)
    except (TypeError, ValueError) as error:
        raise ResultNotSerializable(
            f"The task returned a {type(value).__name__}, which cannot be stored "
            "as JSON; return plain data (dict, list, str, number, bool, None)."
        ) from error


def _error_dict(error: BaseException) -> dict:
    cls = type(error)
    return {
        "exception_class_path": f"{cls.__module__}.{cls.__qualname__}",
        "traceback": "".join(format_exception(error)),
    }


async def _aheartbeat(record: TaskRecord) -> None:
    interval = heartbeat_interval()
    while True:
        await asyncio.sleep(interval)
        try:
            await sync_to_async(record.heartbeat)()
        except Exception:
            logger.warning("Heartbeat failed for task id=%s", record.id, exc_info=True)


def _heartbeat_thread(record: TaskRecord, stop: threading.Event) -> None:
    interval = heartbeat_interval()
    while not stop.wait(interval):
        try:
            record.heartbeat()
        except Exception:
            logger.warning("Heartbeat failed for task id=%s", record.id, exc_info=True)
    connections.close_all()
