"""A task record's whole life, in one place.

Every change of a TaskRecord's state is a function here: create, claim,
heartbeat, progress, succeed, fail (to retry or for good), hand back a lost
attempt, cancel, retry by hand, mark sent or unsent. Each is one conditional
UPDATE under one ownership rule:

    A READY or FAILED record belongs to no one: a write to it is conditioned
    on its status. A RUNNING record belongs to the attempt that claimed it,
    named by its attempt number: a write to it is conditioned on
    ``status = RUNNING AND attempts = n``.

So of two writers racing (two workers given one record, a worker finishing as
the reconciler hands its attempt back, a cancel during a run) exactly one
write takes effect, and the others learn it from the row count. An attempt
that finds it no longer owns its record stops (tasks.monitor) and writes
nothing more.

Events (tasks.events) and signals are sent here, and only for writes that
took effect. Signals have the backend's class as sender, as Django's backends
do: ``task_enqueued`` at create, ``task_started`` at claim, ``task_finished``
when the task is finished (SUCCESSFUL, or FAILED: its error, cancelled, or
given up after lost workers), and ``tasks.signals.task_retrying`` instead of
``task_finished`` for an attempt that will be retried. A failure's signal is
sent inside its exception context, so Django's logging receiver logs the
traceback.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable
from datetime import datetime, timedelta
from traceback import format_exception

from django.db import transaction
from django.db.models import F
from django.tasks import task_backends
from django.tasks.exceptions import InvalidTaskBackend
from django.tasks.signals import task_enqueued, task_finished, task_started
from django.utils import timezone
from django.utils.json import normalize_json

from tasks import events, metrics, record_sql
from tasks.context import current_owner
from tasks.exceptions import TaskCancelled, WorkerLost
from tasks.models import Status, TaskRecord
from tasks.signals import task_retrying

logger = logging.getLogger(__name__)


def create(backend, task, args, kwargs) -> TaskRecord:
    """Write a READY record for ``task(*args, **kwargs)``; deliver it when the
    transaction commits (if the backend delivers it now rather than when due).
    Raises TypeError (nothing stored) for arguments that are not JSON data."""
    now = timezone.now()
    available_at = task.run_after or now
    record = TaskRecord(
        task_path=task.module_path,
        backend=backend.alias,
        queue_name=task.queue_name,
        priority=task.priority,
        args=as_json(list(args), "arguments"),
        kwargs=as_json(dict(kwargs), "arguments"),
        max_attempts=getattr(task, "max_attempts", 1),
        enqueued_at=now,
        run_after=task.run_after,
        available_at=available_at,
        owner=current_owner(),
    )
    record.sent_at = now if backend.delivers_now(record, now) else None
    record_sql.insert(record)
    _after_commit(lambda: _committed(record))
    task_enqueued.send(type(backend), task_result=record.to_task_result(task))
    return record


def claim(record_id: str, worker_id: str) -> TaskRecord | None:
    """READY -> RUNNING for one record; None when it is not there to take
    (someone else has it, or it is finished, cancelled or not yet due)."""
    record = record_sql.claim(TaskRecord, record_id, worker_id, timezone.now())
    if record is not None:
        _started(record)
    return record


def claim_next(targets: record_sql.Targets, worker_id: str) -> TaskRecord | None:
    """READY -> RUNNING for the most urgent due record of ``targets``
    ((backend alias, queue) pairs): highest priority, then longest waiting."""
    record = record_sql.claim_next(TaskRecord, targets, worker_id, timezone.now())
    if record is not None:
        _started(record)
    return record


def heartbeat(records: Iterable[TaskRecord]) -> list[TaskRecord]:
    """Mark running attempts alive; returns those that no longer own their record."""
    now = timezone.now()
    lost = []
    for record in records:
        if not _running(record).update(heartbeat_at=now):
            lost.append(record)
    return lost


def still_owned(records: list[TaskRecord]) -> list[TaskRecord]:
    """The attempts among ``records`` that still own their record (a read)."""
    owned = set(
        TaskRecord.objects.running()
        .filter(pk__in=[record.pk for record in records])
        .values_list("pk", "attempts")
    )
    return [record for record in records if (record.pk, record.attempts) in owned]


def set_progress(record: TaskRecord, fraction: float, message: str) -> bool:
    record.progress = min(max(float(fraction), 0.0), 1.0)
    record.progress_message = message[:200]
    record.heartbeat_at = timezone.now()
    written = record_sql.update_if_current(
        record, ("progress", "progress_message", "heartbeat_at")
    )
    if written:
        events.publish(record)
    return written


def succeed(record: TaskRecord, value) -> bool:
    """RUNNING -> SUCCESSFUL with ``value`` (already JSON data)."""
    record.worker_ids = record.all_worker_ids
    record.status = Status.SUCCESSFUL
    record.return_value = value
    record.finished_at = timezone.now()
    record.progress = 1.0
    written = record_sql.update_if_current(
        record, ("status", "return_value", "finished_at", "progress", "worker_ids")
    )
    if written:
        _finished(record, None)
    return written


def fail(record: TaskRecord, error: BaseException) -> Status | None:
    """Record the running attempt's ``error``: READY again if the task's
    ``retry_on`` names it and attempts remain, else FAILED. Returns the new
    status, or None when the attempt no longer owned the record."""
    retry_at = _retry_at(record, error)
    now = timezone.now()
    record.errors = [*record.errors, error_entry(error)]
    record.worker_ids = record.all_worker_ids
    if retry_at is not None:
        record.status, record.available_at = Status.READY, retry_at
        record.sent_at = now if _backend(record).delivers_now(record, now) else None
    else:
        record.status, record.finished_at = Status.FAILED, now
    if not record_sql.update_if_current(record, _FAILED_FIELDS):
        logger.info("Task id=%s: attempt %d had lost its record", *_named(record))
        return None
    if retry_at is None:
        _finished(record, error)
    else:
        _retrying(record, error, retry_at)
    return Status(record.status)


def hand_back(record: TaskRecord, reason: str) -> Status | None:
    """A lost attempt (dead or silent worker): READY again while attempts
    remain, else FAILED with WorkerLost. Returns the new status, or None when
    the attempt had already ended."""
    error = WorkerLost(reason)
    now = timezone.now()
    record.errors = [*record.errors, error_entry(error)]
    record.worker_ids = record.all_worker_ids
    if record.attempts < record.max_attempts:
        record.status, record.available_at, record.sent_at = Status.READY, now, now
    else:
        record.status, record.finished_at = Status.FAILED, now
    if not record_sql.update_if_current(record, _FAILED_FIELDS):
        return None
    logger.warning("Task id=%s: %s", record.id, reason)
    if record.status == Status.FAILED:
        _finished(record, error)
    else:
        _retrying(record, error, now)
    return Status(record.status)


def hand_back_worker(worker_id: str, reason: str) -> int:
    """Hand back every attempt a worker process was running (it has exited)."""
    records = TaskRecord.objects.running().filter(claimed_by=worker_id)
    return sum(hand_back(record, reason) is not None for record in records)


def cancel(record: TaskRecord) -> bool:
    """READY or RUNNING -> FAILED with TaskCancelled, never retried. A running
    attempt finds it lost its record and is stopped (its process ended, its
    coroutine cancelled, its Celery child terminated)."""
    was = record.status
    if was == Status.READY:
        error = TaskCancelled("Cancelled before it ran.")
        owned = TaskRecord.objects.ready().filter(pk=record.pk)
    elif was == Status.RUNNING:
        error = TaskCancelled(f"Cancelled while running (attempt {record.attempts}).")
        owned = _running(record)
    else:
        return False
    record.errors = [*record.errors, error_entry(error)]
    record.worker_ids = record.all_worker_ids
    record.status, record.finished_at = Status.FAILED, timezone.now()
    fields = ("status", "errors", "worker_ids", "finished_at")
    changes = {name: getattr(record, name) for name in fields}
    if not owned.update(**changes, sequence=F("sequence") + 1):
        return False
    record.sequence = (
        TaskRecord.objects.filter(pk=record.pk).values_list("sequence", flat=True)
    ).get()
    if was == Status.RUNNING:
        _backend(record).stop(record)
    _finished(record, error)
    return True


def retry(record: TaskRecord) -> bool:
    """FAILED -> READY with a fresh budget of attempts, delivered at once."""
    now = timezone.now()
    updated = (
        TaskRecord.objects.failed()
        .filter(pk=record.pk)
        .update(
            status=Status.READY,
            max_attempts=F("attempts") + max(record.max_attempts, 1),
            available_at=now,
            sent_at=now,
            finished_at=None,
            sequence=F("sequence") + 1,
        )
    )
    if not updated:
        return False
    record.refresh_from_db()
    deliver(record)
    events.publish(record)
    return True


def deliver(record: TaskRecord) -> bool:
    """Send the record's wake-up (or Celery message); on failure mark it
    unsent, for the reconciler (Celery) or an idle worker's claim (Channels)."""
    try:
        _backend(record).deliver(record)
    except Exception as error:
        _undelivered.log(record, error)
        TaskRecord.objects.filter(pk=record.pk, sent_at=record.sent_at).update(
            sent_at=None
        )
        return False
    return True


def redeliver(record: TaskRecord, now: datetime) -> bool:
    """Stamp a READY record sent now (unless someone else did) and deliver it."""
    stamped = (
        TaskRecord.objects.ready()
        .filter(pk=record.pk, sent_at=record.sent_at)
        .update(sent_at=now)
    )
    if not stamped:
        return False
    record.sent_at = now
    return deliver(record)


def as_json(value, what: str):
    """``value`` as JSON data, exactly as the record's JSON fields read it back
    (``{1: "a"}`` has the key ``"1"``), so that a result held by a caller
    equals the stored one. For anything else Django's own TypeError, with a
    note that says what was wrong (``what``: "arguments", "return value")."""
    try:
        return json.loads(json.dumps(normalize_json(value)))
    except (TypeError, ValueError) as error:
        error.add_note(
            f"The task's {what} must be JSON data "
            "(dict, list, str, int, float, bool or None)."
        )
        raise


def error_entry(error: BaseException) -> dict:
    """How an attempt's error is stored: its class path and its traceback."""
    cls = type(error)
    return {
        "exception_class_path": f"{cls.__module__}.{cls.__qualname__}",
        "traceback": "".join(format_exception(error)),
    }


# --- Helpers --------------------------------------------------------------------


class _Undelivered:
    """Logs failed deliveries at most once a minute per queue (a backlog
    beyond a channel's capacity fails every send), the rest at DEBUG."""

    EVERY = 60.0

    def __init__(self) -> None:
        self._last: dict[str, float] = {}
        self._since: dict[str, int] = {}

    def log(self, record: TaskRecord, error: Exception) -> None:
        queue, now = record.queue_name, time.monotonic()
        self._since[queue] = self._since.get(queue, 0) + 1
        if now - self._last.get(queue, -self.EVERY) < self.EVERY:
            logger.debug("Task id=%s not delivered (%s)", record.id, error)
            return
        logger.warning(
            "%d task(s) of queue %r not delivered (%s); workers claim them "
            "from the database all the same (Celery ones: the reconciler "
            "sends them)",
            self._since.pop(queue, 1),
            queue,
            error,
        )
        self._last[queue] = now


_undelivered = _Undelivered()


def _running(record: TaskRecord):
    return TaskRecord.objects.filter(
        pk=record.pk, status=Status.RUNNING, attempts=record.attempts
    )


_FAILED_FIELDS = (
    "status", "errors", "worker_ids", "available_at", "sent_at", "finished_at"
)  # fmt: skip


def _retry_at(record: TaskRecord, error: BaseException) -> datetime | None:
    if isinstance(error, TaskCancelled):
        return None
    try:
        task = record.get_task()
    except Exception:
        return None  # the task cannot even be imported: nothing to retry
    if not getattr(task, "should_retry", None) or not task.should_retry(
        error, record.attempts
    ):
        return None
    return timezone.now() + timedelta(seconds=task.retry_delay(record.attempts))


def _committed(record: TaskRecord) -> None:
    metrics.on_enqueued(record)
    if record.sent_at is not None:
        deliver(record)


def _started(record: TaskRecord) -> None:
    def announce() -> None:
        metrics.on_started(record)
        _signal(task_started, record)
        events.publish(record)

    _after_commit(announce)


def _finished(record: TaskRecord, error: BaseException | None) -> None:
    def announce() -> None:
        metrics.on_finished(record)
        _signal(task_finished, record, error)
        events.publish(record)

    _after_commit(announce)


def _retrying(record: TaskRecord, error: BaseException, retry_at: datetime) -> None:
    def announce() -> None:
        _signal(task_retrying, record, error, error=error, retry_at=retry_at)
        if record.sent_at is not None:
            deliver(record)
        events.publish(record)

    _after_commit(announce)


def _after_commit(announce) -> None:
    """Announce a write once it has taken effect: at once outside a
    transaction, at its commit inside one (a worker writes an outcome and
    its next claim in one), never if it rolls back."""
    transaction.on_commit(announce, robust=True)


def _signal(signal, record: TaskRecord, handling=None, **extra) -> None:
    """Send ``signal``; with ``handling`` (an exception), inside its context."""
    try:
        result = record.to_task_result()
    except Exception:
        # The task's code is gone (renamed, deleted): no TaskResult to send.
        logger.warning("Task id=%s: %s cannot be imported", record.id, record.task_path)
        return
    sender = _backend_class(record)
    if handling is None:
        signal.send(sender, task_result=result, **extra)
        return
    # Make it the exception being handled (sys.exc_info()), with its own
    # traceback, as Django's receivers expect when a task failed.
    traceback = handling.__traceback__
    try:
        raise handling
    except BaseException:
        handling.__traceback__ = traceback
        signal.send(sender, task_result=result, **extra)


def _backend(record: TaskRecord):
    return task_backends[record.backend]


def _backend_class(record: TaskRecord):
    try:
        return type(_backend(record))
    except InvalidTaskBackend:
        return None


def _named(record: TaskRecord) -> tuple[str, int]:
    return record.id, record.attempts
