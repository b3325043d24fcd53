"""django.tasks backends: Channels (fast, best-effort transport) and Celery
(guaranteed delivery). Both keep the same durable TaskRecord, so results,
the admin, the API and live events see every job alike."""

from __future__ import annotations

import logging
from abc import abstractmethod

from asgiref.sync import sync_to_async
from django.core.checks import Error
from django.db import transaction
from django.tasks.backends.base import BaseTaskBackend
from django.tasks.exceptions import TaskResultDoesNotExist
from django.tasks.signals import task_enqueued
from django.utils import timezone
from django.utils.json import normalize_json

from tasks import statements, transport
from tasks.base import JobTask
from tasks.context import current_owner
from tasks.exceptions import TransportUnavailable
from tasks.models import TaskRecord

logger = logging.getLogger(__name__)


class RecordBackend(BaseTaskBackend):
    """Shared part: enqueue writes a TaskRecord, then delivers it on commit."""

    task_class = JobTask
    supports_defer = True
    supports_get_result = True
    supports_async_task = True

    def enqueue(self, task, args, kwargs):
        self.validate_task(task)
        record = self._create_record(task, args, kwargs)
        if record.run_after is None:
            transaction.on_commit(lambda: self.deliver(record), robust=True)
        result = record.to_task_result()
        task_enqueued.send(type(self), task_result=result)
        return result

    async def aenqueue(self, task, args, kwargs):
        self.validate_task(task)
        record = await sync_to_async(self._create_record)(task, args, kwargs)
        if record.run_after is None:
            await self.adeliver(record)
        result = record.to_task_result()
        await task_enqueued.asend(type(self), task_result=result)
        return result

    def get_result(self, result_id):
        try:
            record = TaskRecord.objects.get(pk=result_id, backend=self.alias)
        except TaskRecord.DoesNotExist:
            raise TaskResultDoesNotExist(result_id) from None
        return record.to_task_result()

    async def aget_result(self, result_id):
        return await sync_to_async(self.get_result)(result_id)

    @abstractmethod
    def deliver(self, record: TaskRecord) -> bool:
        """Send the record's wake-up message; False (logged) when that failed."""

    async def adeliver(self, record: TaskRecord) -> bool:
        return await sync_to_async(self.deliver)(record)

    def _create_record(self, task, args, kwargs) -> TaskRecord:
        now = timezone.now()
        record = TaskRecord(
            task_path=task.module_path,
            backend=self.alias,
            queue_name=task.queue_name,
            priority=task.priority,
            args=normalize_json(list(args)),
            kwargs=normalize_json(dict(kwargs)),
            max_attempts=getattr(task, "max_attempts", 1),
            enqueued_at=now,
            run_after=task.run_after,
            sent_at=now if task.run_after is None else None,
            owner=current_owner(),
        )
        statements.insert(record)
        return record

    def check(self, **kwargs):
        if not self.queues:
            return [Error(f"TASKS[{self.alias!r}] lists no QUEUES.", id="tasks.E001")]
        return []


class ChannelsBackend(RecordBackend):
    """Delivers ``{"type": "task.run", "id": ...}`` on the channel named by the
    task's queue; ``manage.py runworker <queue>`` runs it."""

    def deliver(self, record: TaskRecord) -> bool:
        try:
            transport.send(record.queue_name, run_message(record.id))
        except TransportUnavailable as error:
            return _undelivered(record, error)
        return True

    async def adeliver(self, record: TaskRecord) -> bool:
        try:
            await transport.asend(record.queue_name, run_message(record.id))
        except TransportUnavailable as error:
            return await sync_to_async(_undelivered)(record, error)
        return True


class CeleryBackend(RecordBackend):
    """Delivers through one generic Celery task (acks late, requeued when the
    worker is lost); per-task retries with backoff are recorded attempt by attempt."""

    def deliver(self, record: TaskRecord) -> bool:
        from tasks.celery_tasks import publish

        try:
            publish(record)
        except Exception as error:
            return _undelivered(record, error)
        return True


def run_message(record_id: str) -> dict:
    """The wake-up message: small, never the arguments (they are in the record)."""
    return {"type": "task.run", "id": record_id}


def _undelivered(record: TaskRecord, error: Exception) -> bool:
    logger.warning(
        "Task id=%s not delivered (%s); the reconciler will send it", record.id, error
    )
    TaskRecord.objects.filter(pk=record.pk, sent_at=record.sent_at).update(sent_at=None)
    return False
