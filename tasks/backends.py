"""django.tasks backends: Channels (fast, best-effort transport) and Celery
(guaranteed delivery). Both keep the same durable TaskRecord, so results,
the admin, the API and live events see every job alike."""

from __future__ import annotations

from abc import abstractmethod
from datetime import datetime, timedelta

from django.conf import settings
from django.core.checks import Error
from django.tasks import TaskResult, task_backends
from django.tasks.backends.base import BaseTaskBackend
from django.tasks.exceptions import InvalidTask, TaskResultDoesNotExist
from django.utils import timezone

from tasks import conf, lifecycle, record_sql, transport
from tasks.base import JobTask, is_limit
from tasks.models import TaskRecord


class RecordBackend(BaseTaskBackend):
    """Shared part: enqueue writes a TaskRecord, delivered when the
    transaction commits (from sync and async code alike: Django's
    ``aenqueue`` runs ``enqueue`` in the thread that holds the transaction)."""

    task_class = JobTask
    supports_defer = True
    supports_get_result = True
    supports_async_task = True
    supports_priority = True

    def validate_task(self, task) -> None:
        super().validate_task(task)
        if getattr(task, "max_attempts", 1) < 1:
            raise InvalidTask("max_attempts must be a whole number >= 1.")
        timeout = getattr(task, "timeout", None)
        if timeout is not None and not timeout > 0:
            raise InvalidTask("timeout must be a positive number of seconds.")
        concurrency = getattr(task, "concurrency", None)
        if concurrency is not None and not is_limit(concurrency):
            raise InvalidTask("concurrency must be a whole number >= 1.")
        if getattr(task, "concurrency_key", None) and concurrency is None:
            raise InvalidTask("concurrency_key needs concurrency (the limit).")

    def enqueue(self, task, args, kwargs) -> TaskResult:
        """A new READY record, or for a unique task the equal job that is
        already waiting or running."""
        self.validate_task(task)
        return lifecycle.create(self, task, args, kwargs)

    def enqueue_many(self, task, calls: list[tuple[list, dict]]) -> list[TaskResult]:
        """One record per (args, kwargs) in ``calls``, written in one statement
        and woken in one round trip (tasks.enqueue_many)."""
        self.validate_task(task)
        return lifecycle.create_many(self, task, calls)

    def get_result(self, result_id):
        try:
            record = TaskRecord.objects.get(pk=result_id, backend=self.alias)
        except TaskRecord.DoesNotExist:
            raise TaskResultDoesNotExist(result_id) from None
        return record.to_task_result()

    @abstractmethod
    def deliver(self, record: TaskRecord) -> None:
        """Send the record's wake-up or message; raise if that failed."""

    def deliver_many(self, records: list[TaskRecord]) -> None:
        """Deliver the due records of one ``enqueue_many``. Here one by one,
        each marked unsent if it failed (Celery: one publish per task)."""
        for record in records:
            lifecycle.deliver(record)

    @abstractmethod
    def delivers_now(self, record: TaskRecord, now: datetime) -> bool:
        """Whether a record that becomes READY (enqueued, to be retried) is
        delivered now; if not, it is when due (workers claim due Channels
        records; the reconciler publishes due Celery ones)."""

    def stop(self, record: TaskRecord) -> None:
        """Stop a running attempt whose record was cancelled (best-effort:
        the attempt can no longer write its outcome anyway)."""

    def check(self, **kwargs):
        vendor = record_sql.vendor(TaskRecord)
        if vendor not in record_sql.SUPPORTED_VENDORS:
            return [
                Error(
                    f"TASKS[{self.alias!r}] needs SQLite or PostgreSQL, not {vendor}.",
                    hint="Task claims are UPDATE ... RETURNING statements.",
                    id="tasks.E002",
                )
            ]
        return []


class ChannelsBackend(RecordBackend):
    """Rings ``{"type": "task.run", "id": ...}`` on the channel named by the
    task's queue; ``manage.py runworker <queue>`` claims and runs it."""

    def deliver(self, record: TaskRecord) -> None:
        if self.delivers_now(record, timezone.now()):
            transport.send(record.queue_name, transport.doorbell(record.id))

    def deliver_many(self, records: list[TaskRecord]) -> None:
        """One round trip per queue, as many wake-ups as its channel has room
        for: a woken slot claims from the database until nothing is due, so
        the rest need none. Raises if the layer failed."""
        by_queue: dict[str, list[TaskRecord]] = {}
        for record in records:
            by_queue.setdefault(record.queue_name, []).append(record)
        for queue, waiting in by_queue.items():
            transport.send_many(queue, [transport.doorbell(r.id) for r in waiting])

    def delivers_now(self, record: TaskRecord, now: datetime) -> bool:
        # A deferred record needs no wake-up: idle workers claim it when due.
        return record.available_at <= now

    def check(self, **kwargs):
        errors = super().check(**kwargs)
        if "default" not in getattr(settings, "CHANNEL_LAYERS", {}):
            errors.append(
                Error(
                    f"TASKS[{self.alias!r}] needs a channel layer.",
                    hint="Set CHANNEL_LAYERS['default'] (channels_redis).",
                    id="tasks.E003",
                )
            )
        return errors


class CeleryBackend(RecordBackend):
    """Delivers through one generic Celery task (acks late, requeued when the
    worker is lost); per-task retries with backoff are recorded attempt by
    attempt. Priorities map onto the broker's (tasks.celery_tasks)."""

    def deliver(self, record: TaskRecord) -> None:
        from tasks.celery_tasks import publish

        publish(record)

    def delivers_now(self, record: TaskRecord, now: datetime) -> bool:
        """Due now, or soon enough for Celery's eta: a message the broker holds
        longer than its visibility timeout would be delivered twice (the claim
        would refuse the second, but the worker holds both in memory). Later
        records are published by the reconciler when due."""
        horizon = conf.visibility_timeout() / 2
        return record.available_at <= now + timedelta(seconds=horizon)

    def stop(self, record: TaskRecord) -> None:
        from tasks.celery_tasks import terminate

        terminate(record)


def channels_aliases() -> list[str]:
    """Aliases of the configured TASKS backends that ``runworker`` serves."""
    return [
        alias
        for alias in task_backends.settings
        if isinstance(task_backends[alias], ChannelsBackend)
    ]


def channels_queues() -> list[str]:
    """Every queue of the configured Channels backends (their ``QUEUES``)."""
    aliases = channels_aliases()
    return sorted({queue for alias in aliases for queue in task_backends[alias].queues})
