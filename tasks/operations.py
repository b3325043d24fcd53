"""Operations on records for people: retry failed tasks, cancel pending ones.
Used by the admin and the management commands."""

from __future__ import annotations

import logging

from django.db.models import F, QuerySet
from django.tasks import task_backends
from django.utils import timezone

from tasks import events
from tasks.models import Status, TaskRecord

logger = logging.getLogger(__name__)

CANCELLED = {
    "exception_class_path": "tasks.exceptions.TaskCancelled",
    "traceback": "Cancelled before it ran.",
}


def retry(queryset: QuerySet[TaskRecord]) -> int:
    """Put FAILED records back to READY with a fresh attempt budget and send
    them; returns how many were retried."""
    count = 0
    for record in queryset.filter(status=Status.FAILED):
        updated = TaskRecord.objects.filter(pk=record.pk, status=Status.FAILED).update(
            status=Status.READY,
            max_attempts=F("attempts") + max(record.max_attempts, 1),
            run_after=None,
            sent_at=timezone.now(),
            finished_at=None,
        )
        if updated:
            record.refresh_from_db()
            task_backends[record.backend].deliver(record)
            events.publish(record)
            count += 1
    logger.info("Retried %d failed task(s)", count)
    return count


def cancel(queryset: QuerySet[TaskRecord]) -> int:
    """Mark READY records FAILED ("cancelled") so no worker runs them; running
    and finished records are left alone. Returns how many were cancelled."""
    count = 0
    for record in queryset.filter(status=Status.READY):
        updated = TaskRecord.objects.filter(pk=record.pk, status=Status.READY).update(
            status=Status.FAILED,
            finished_at=timezone.now(),
            errors=[*record.errors, CANCELLED],
        )
        if updated:
            record.refresh_from_db()
            events.publish(record)
            count += 1
    return count
