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
from contextlib import AbstractContextManager, nullcontext
from copy import copy
from datetime import datetime, timedelta
from traceback import format_exception

from django.db import IntegrityError, router, transaction
from django.db.models import F
from django.tasks import Task, TaskResult, task_backends
from django.tasks.backends.base import BaseTaskBackend
from django.tasks.exceptions import InvalidTaskBackend
from django.tasks.signals import task_enqueued, task_finished, task_started
from django.utils import timezone
from django.utils.json import normalize_json

from tasks import events, limits, metrics, record_sql
from tasks.context import current_owner
from tasks.exceptions import EqualJobActive, TaskCancelled, UniqueJobRace, WorkerLost
from tasks.models import Status, TaskRecord, new_task_id
from tasks.signals import task_retrying

logger = logging.getLogger(__name__)


def create(backend: BaseTaskBackend, task: Task, args, kwargs) -> TaskResult:
    """Write a READY record for ``task(*args, **kwargs)``; deliver it when the
    transaction commits (if the backend delivers it now rather than when due).
    For a unique task whose equal job is READY or RUNNING, that job's result
    instead (nothing written, nothing sent). Raises TypeError (nothing
    stored) for arguments that are not JSON data."""
    record = _new_record(backend, task, args, kwargs, timezone.now())
    with _visible_once_announced():
        if record.unique_key is None:
            record_sql.insert(record)
        else:
            existing = _insert_unique(record)
            if existing is not None:
                return existing.to_task_result()  # its own task (queue, priority)
        _after_commit(lambda: _committed([record]))
        result = record.to_task_result(task)
        task_enqueued.send(type(backend), task_result=result)
    return result


def create_many(
    backend: BaseTaskBackend, task: Task, calls: Iterable[tuple[list, dict]]
) -> list[TaskResult]:
    """``create`` for many calls of one task: the records are written in one
    statement and their wake-ups sent in one round trip when the transaction
    commits. Returns one result per call, in order (for a unique task, the
    active equal job's where there is one: equal calls in ``calls`` share one)."""
    records = _new_records(backend, task, calls, timezone.now())
    unique = any(record.unique_key is not None for record in records)
    with _visible_once_announced():
        written = record_sql.insert_many(records, if_absent=unique)
        new = [record for record in records if record.pk in written]
        if len(new) < len(records):
            records = _with_active_equals(records, written)
        _after_commit(lambda: _committed(new))
        written_by_us = {record.pk for record in new}
        results = {}
        for record in records:
            if record.pk not in results:
                # An equal job found active reads as its own task.
                own = task if record.pk in written_by_us else None
                results[record.pk] = record.to_task_result(own)
        sender = type(backend)
        for record in new:
            task_enqueued.send(sender, task_result=results[record.pk])
    return [results[record.pk] for record in records]


def claim(record_id: str, worker_id: str) -> TaskRecord | None:
    """READY -> RUNNING for one record; None when it is not there to take
    (someone else has it, or it is finished, cancelled or not yet due)."""
    record = limits.claiming(
        lambda: record_sql.claim(TaskRecord, record_id, worker_id, timezone.now())
    )
    if record is not None:
        _started(record)
    return record


def claim_next(targets: record_sql.Targets, worker_id: str) -> TaskRecord | None:
    """READY -> RUNNING for the most urgent due record of ``targets``
    ((backend alias, queue) pairs): highest priority, then longest waiting."""
    record = limits.claiming(
        lambda: record_sql.claim_next(TaskRecord, targets, worker_id, timezone.now())
    )
    if record is not None:
        _started(record)
    return record


def heartbeat(records: Iterable[TaskRecord]) -> list[TaskRecord]:
    """Mark running attempts alive, with their latest progress (so a report
    that failed to be written, the database being down, lands with the next
    beat); returns those that no longer own their record."""
    now = timezone.now()
    lost = []
    for record in records:
        alive = _running(record).update(
            heartbeat_at=now,
            progress=record.progress,
            progress_message=record.progress_message,
        )
        if not alive:
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
    """FAILED -> READY with a fresh budget of attempts, delivered at once.
    Raises EqualJobActive for a unique task whose equal job is active."""
    now = timezone.now()
    try:
        with transaction.atomic():
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
    except IntegrityError:
        if record.unique_key is None:
            raise
        equal = TaskRecord.objects.active().filter(unique_key=record.unique_key)
        equal_id = equal.values_list("pk", flat=True).first()
        raise EqualJobActive(record, equal_id) from None
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


def wait_for_slot(record_id: str) -> bool:
    """A Celery record that its concurrency limit kept from being claimed
    waits unsent: passed a slot when one frees (``pass_slot``), else re-sent
    by the reconciler once its key has room. False if it was not that case."""
    waiting = TaskRecord.objects.ready().filter(
        pk=record_id, concurrency_limit__isnull=False
    )
    return bool(waiting.update(sent_at=None))


def pass_slot(record: TaskRecord) -> bool:
    """A limited Celery attempt ended: deliver the most urgent record waiting
    for a slot of its key, if any."""
    now = timezone.now()
    waiting = (
        TaskRecord.objects.due(now)
        .filter(
            concurrency_key=record.concurrency_key,
            concurrency_limit__isnull=False,
            sent_at__isnull=True,
        )
        .exclude(backend__in=_channels_aliases())
        .order_by("-priority", "available_at")
        .first()
    )
    return waiting is not None and redeliver(waiting, now)


def as_json(value, what: str):
    """``value`` as JSON data, exactly as the record's JSON fields read it back
    (``{1: "a"}`` has the key ``"1"``), so that a result held by a caller
    equals the stored one. For anything else Django's own TypeError, with a
    note that says what was wrong (``what``: "arguments", "return value")."""
    if _flat(value):
        return copy(value)  # already what the round trip would give
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


def _new_records(backend, task, calls, now: datetime) -> list[TaskRecord]:
    """``_new_record`` for each call: the fields every record shares are
    computed once (the first record's), and the others are built
    positionally (Django's fast path), only their own fields computed."""
    calls = iter(calls)
    first = next(calls, None)
    if first is None:
        return []
    template = _new_record(backend, task, *first, now)
    fields = [field.attname for field in TaskRecord._meta.concrete_fields]
    shared = [getattr(template, name) for name in fields]
    own = [fields.index(name) for name in _OWN_FIELDS]
    records = [template]
    for args, kwargs in calls:
        values = shared.copy()
        for index, value in zip(own, _own_values(task, args, kwargs), strict=True):
            values[index] = value
        records.append(TaskRecord(*values))
    return records


# What differs between the records of one enqueue_many (_own_values' order).
_OWN_FIELDS = (
    "id", "args", "kwargs", "unique_key", "concurrency_key", "concurrency_limit"
)  # fmt: skip


def _own_values(task, args, kwargs) -> tuple:
    args, kwargs = as_json(list(args), "arguments"), as_json(dict(kwargs), "arguments")
    limit = task.limit(args, kwargs) if hasattr(task, "limit") else None
    unique = (
        task.uniqueness_key(args, kwargs) if hasattr(task, "uniqueness_key") else None
    )
    return (
        new_task_id(),
        args,
        kwargs,
        unique,
        limit[0] if limit else "",
        limit[1] if limit else None,
    )


def _new_record(backend, task, args, kwargs, now: datetime) -> TaskRecord:
    record_id, args, kwargs, unique_key, concurrency_key, concurrency_limit = (
        _own_values(task, args, kwargs)
    )
    record = TaskRecord(
        id=record_id,
        task_path=task.module_path,
        backend=backend.alias,
        queue_name=task.queue_name,
        priority=task.priority,
        args=args,
        kwargs=kwargs,
        max_attempts=getattr(task, "max_attempts", 1),
        enqueued_at=now,
        run_after=task.run_after,
        available_at=task.run_after or now,
        owner=current_owner(),
        unique_key=unique_key,
        concurrency_key=concurrency_key,
        concurrency_limit=concurrency_limit,
    )
    record.sent_at = now if backend.delivers_now(record, now) else None
    return record


_SCALARS = (str, int, float, bool, type(None))


def _flat(value) -> bool:
    """A list of JSON scalars, or a dict of str keys to them (exact types:
    a subclass may serialise otherwise)."""
    if type(value) is list:
        return all(type(item) in _SCALARS for item in value)
    if type(value) is dict:
        return all(
            type(key) is str and type(item) in _SCALARS for key, item in value.items()
        )
    return False


# An equal job can finish between our refused insert and our look for it;
# then the insert is tried again (a few times at most: each time it finished).
_UNIQUE_TRIES = 5


def _insert_unique(record: TaskRecord) -> TaskRecord | None:
    """Insert a unique task's record; or return the active equal one."""
    for _ in range(_UNIQUE_TRIES):
        if record_sql.insert(record, if_absent=True):
            return None
        existing = TaskRecord.objects.active().filter(unique_key=record.unique_key)
        if (found := existing.first()) is not None:
            logger.debug("%s: equal job id=%s is active", record.task_path, found.pk)
            return found
    raise UniqueJobRace(record.task_path, _UNIQUE_TRIES)


def _with_active_equals(
    records: list[TaskRecord], written: set[str]
) -> list[TaskRecord]:
    """Each refused record replaced by the active job with its unique key."""
    keys = sorted({r.unique_key for r in records if r.pk not in written})
    active = {}
    for start in range(0, len(keys), _LOOKUP_BATCH):
        chunk = keys[start : start + _LOOKUP_BATCH]
        for found in TaskRecord.objects.active().filter(unique_key__in=chunk):
            active[found.unique_key] = found
    result = []
    for record in records:
        if record.pk in written:
            result.append(record)
        elif record.unique_key in active:
            result.append(active[record.unique_key])
        else:  # finished since: a job of its own after all
            result.append(_insert_unique(record) or _created_alone(record))
    return result


_LOOKUP_BATCH = 500


def _created_alone(record: TaskRecord) -> TaskRecord:
    _after_commit(lambda: _committed([record]))
    task_enqueued.send(_backend_class(record), task_result=record.to_task_result())
    return record


def _committed(records: list[TaskRecord]) -> None:
    metrics.on_enqueued(records)
    by_backend: dict[str, list[TaskRecord]] = {}
    for record in records:
        if record.sent_at is not None:
            by_backend.setdefault(record.backend, []).append(record)
    for alias, due in by_backend.items():
        if len(due) == 1:
            deliver(due[0])
        else:
            _deliver_many(alias, due)


def _deliver_many(alias: str, records: list[TaskRecord]) -> None:
    """``deliver`` for many records of one backend (one round trip where the
    backend allows); those not delivered are marked unsent."""
    try:
        task_backends[alias].deliver_many(records)
    except Exception as error:
        _undelivered.log(records[0], error)
        TaskRecord.objects.filter(pk__in=[r.pk for r in records]).update(sent_at=None)


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


def _visible_once_announced() -> AbstractContextManager:
    """Where new records are written and their ``task_enqueued`` sent: in
    the caller's transaction, or else in one of their own, so that no worker
    can see a record (and send ``task_started``) before ``task_enqueued`` was
    sent for it, and the wake-ups go once both are done."""
    connection = transaction.get_connection(router.db_for_write(TaskRecord))
    return nullcontext() if connection.in_atomic_block else transaction.atomic()


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


def _channels_aliases() -> list[str]:
    from tasks.backends import channels_aliases

    return channels_aliases()


def _backend(record: TaskRecord):
    return task_backends[record.backend]


def _backend_class(record: TaskRecord):
    try:
        return type(_backend(record))
    except InvalidTaskBackend:
        return None


def _named(record: TaskRecord) -> tuple[str, int]:
    return record.id, record.attempts
