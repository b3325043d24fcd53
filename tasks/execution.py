"""Running one task record: claim, call, heart-beat, record the outcome.

Shared by the Channels worker (async) and the Celery task (sync), so both
transports give a record the same life. A claim is a conditional update, so a
duplicate delivery never runs a task twice at once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from inspect import iscoroutinefunction
from traceback import format_exception

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import close_old_connections
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

    A sync task is claimed, run and recorded in one worker thread (one thread
    hop per task); a coroutine task is claimed there, then runs on this loop.
    """
    record = await sync_to_async(claim_and_run_sync, thread_sensitive=False)(
        record_id, worker_id
    )
    if isinstance(record, Outcome):
        return record
    return await arun_claimed(record)


async def arun_claimed(record: TaskRecord) -> Outcome:
    """Run a claimed coroutine task on this loop and record its outcome."""
    await events.apublish(record)
    with heartbeats.beating(record), running(record):
        value, error = await _acall(record)
    outcome = await sync_to_async(_finish, thread_sensitive=False)(record, value, error)
    await events.apublish(record)
    return outcome


def run(record_id: str, worker_id: str) -> Outcome:
    """Run a record in this thread (the Celery transport)."""
    record = _claim(record_id, worker_id)
    if record is None:
        return Outcome(record_id, "skipped")
    return _run_claimed(record)


class Heartbeats:
    """One thread per process refreshes the heartbeat of every running record
    (no thread per task: starting one costs more than a no-op task)."""

    def __init__(self) -> None:
        self._records: dict[int, TaskRecord] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pid: int | None = None

    @contextmanager
    def beating(self, record: TaskRecord) -> Iterator[None]:
        key = id(record)
        with self._lock:
            self._records[key] = record
            self._ensure_thread()
        try:
            yield
        finally:
            with self._lock:
                self._records.pop(key, None)

    def _ensure_thread(self) -> None:
        if (
            self._thread is None
            or self._pid != os.getpid()
            or not self._thread.is_alive()
        ):
            self._pid = os.getpid()
            self._thread = threading.Thread(
                target=self._beat_forever, name="task-heartbeat", daemon=True
            )
            self._thread.start()

    def _beat_forever(self) -> None:
        while True:
            time.sleep(heartbeat_interval())
            with self._lock:
                records = list(self._records.values())
            for record in records:
                try:
                    record.heartbeat()
                except Exception:
                    logger.warning(
                        "Heartbeat failed for task id=%s", record.id, exc_info=True
                    )


heartbeats = Heartbeats()


def claim_and_run_sync(record_id: str, worker_id: str) -> Outcome | TaskRecord:
    """Claim; run it here if it is a sync task, else hand the claimed record
    back for the event loop to run (``arun_claimed``)."""
    record = _claim(record_id, worker_id)
    if record is None:
        return Outcome(record_id, "skipped")
    if iscoroutinefunction(record.get_task().func):
        return record
    return _run_claimed(record)


def _run_claimed(record: TaskRecord) -> Outcome:
    events.publish(record)
    with heartbeats.beating(record), running(record):
        value, error = _call(record)
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
