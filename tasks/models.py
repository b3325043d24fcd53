"""The durable task record: the truth about every job, whichever transport runs it.

This module holds what a record *is* (its fields, named queries and how it
reads as a Django ``TaskResult``); every change of its state is in
``tasks.lifecycle``.
"""

from __future__ import annotations

import functools
import secrets
from datetime import datetime, timedelta

from django.conf import settings
from django.db import models
from django.db.models import Count, Min, Q
from django.tasks import TaskResultStatus
from django.tasks.base import TaskError, TaskResult
from django.utils import timezone
from django.utils.module_loading import import_string

Status = TaskResultStatus
FINISHED = (Status.SUCCESSFUL, Status.FAILED)
ACTIVE = (Status.READY, Status.RUNNING)


def new_task_id() -> str:
    """32 hex digits (128 random bits): as unguessable as needed, and ten
    times cheaper than get_random_string(32) on the enqueue path."""
    return secrets.token_hex(16)


class TaskRecordQuerySet(models.QuerySet):
    def ready(self) -> TaskRecordQuerySet:
        return self.filter(status=Status.READY)

    def running(self) -> TaskRecordQuerySet:
        return self.filter(status=Status.RUNNING)

    def active(self) -> TaskRecordQuerySet:
        """READY or RUNNING: not finished."""
        return self.filter(status__in=ACTIVE)

    def failed(self) -> TaskRecordQuerySet:
        return self.filter(status=Status.FAILED)

    def successful(self) -> TaskRecordQuerySet:
        return self.filter(status=Status.SUCCESSFUL)

    def due(self, now: datetime) -> TaskRecordQuerySet:
        """READY records that may be claimed now."""
        return self.ready().filter(available_at__lte=now)

    def unsent_or_lost(self, now: datetime, grace: timedelta) -> TaskRecordQuerySet:
        """Due READY records never sent, or sent longer ago than ``grace``."""
        return self.due(now).filter(
            Q(sent_at__isnull=True) | Q(sent_at__lt=now - grace)
        )

    def stale(self, now: datetime, grace: timedelta) -> TaskRecordQuerySet:
        """RUNNING records whose worker stopped heart-beating."""
        return self.running().filter(heartbeat_at__lt=now - grace)

    def for_owner(self, user) -> TaskRecordQuerySet:
        return self.filter(owner=user)

    def unfinished_or_since(self, since: datetime) -> TaskRecordQuerySet:
        """Records still waiting or running, and those finished at ``since``
        or later: what a live page must show (realtime's snapshot)."""
        unfinished = Q(status__in=ACTIVE)
        return self.filter(unfinished | Q(finished_at__gte=since))

    def backlog(self, now: datetime):
        """Per (queue_name, backend): how many due records wait (``count``)
        and since when the oldest could have run (``oldest``)."""
        rows = self.due(now).values("queue_name", "backend")
        return rows.annotate(count=Count("pk"), oldest=Min("available_at")).order_by()


class TaskRecord(models.Model):
    """One enqueued task: its call, its state, and every attempt's outcome."""

    id = models.CharField(primary_key=True, max_length=32, default=new_task_id)
    task_path = models.CharField(max_length=255, db_index=True)
    backend = models.CharField(max_length=64)
    queue_name = models.CharField(max_length=64)
    priority = models.SmallIntegerField(default=0)
    args = models.JSONField(default=list, blank=True)
    kwargs = models.JSONField(default=dict, blank=True)

    status = models.CharField(
        max_length=10, choices=Status.choices, default=Status.READY
    )
    return_value = models.JSONField(null=True, blank=True)
    # One {"exception_class_path", "traceback"} per failed attempt.
    errors = models.JSONField(default=list, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    max_attempts = models.PositiveIntegerField(default=3)
    # Workers of finished attempts; the current attempt's is ``claimed_by``.
    worker_ids = models.JSONField(default=list, blank=True)
    claimed_by = models.CharField(max_length=100, blank=True)

    enqueued_at = models.DateTimeField(default=timezone.now)
    # The task's own run_after, as enqueued (None: at once).
    run_after = models.DateTimeField(null=True, blank=True)
    # When a READY record may be claimed: at enqueue, its run_after, or the
    # time of its next attempt after a failure.
    available_at = models.DateTimeField(default=timezone.now)
    # When the last wake-up message was sent; null: not (successfully) sent.
    sent_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    last_attempted_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    progress = models.FloatField(default=0.0)
    progress_message = models.CharField(max_length=200, blank=True)
    # Bumped by every status or progress write: live clients keep the
    # highest they have seen per task and drop older events (realtime).
    sequence = models.PositiveBigIntegerField(default=0, editable=False)
    # Unique jobs (JobTask.unique): while the record is READY or RUNNING no
    # other record has the same key. Null (not ""): the task is not unique,
    # and such rows stay out of the constraint's partial index.
    unique_key = models.CharField(  # noqa: DJ001 (see above)
        max_length=64, null=True, blank=True, editable=False
    )
    # Concurrency limits (tasks.limits): at most ``concurrency_limit`` records
    # with this key RUNNING at once. Null: no limit.
    concurrency_key = models.CharField(max_length=255, blank=True, editable=False)
    concurrency_limit = models.PositiveIntegerField(null=True, blank=True)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="task_records",
        db_index=False,  # task_owner_recent starts with owner
    )

    objects = TaskRecordQuerySet.as_manager()

    class Meta:
        ordering = ["-enqueued_at"]
        # Few indexes on purpose: every status change rewrites each index that
        # holds ``status``, and with five of them the index work was most of
        # the claim's and the finish's cost (and of how long they hold a
        # SQLite write lock).
        indexes = [
            # The claim: the most urgent due READY record of a backend's queue.
            # Partial, so it holds only the waiting rows, never the history.
            models.Index(
                fields=["backend", "queue_name", "-priority", "available_at"],
                condition=Q(status=Status.READY),
                name="task_ready_claim",
            ),
            # The reconciler (RUNNING heartbeats, unsent Celery records) and
            # the admin's status filter, oldest or newest first.
            models.Index(fields=["status", "enqueued_at"], name="task_status_enqueued"),
            # A user's own jobs, newest first (pages, API, events).
            models.Index(fields=["owner", "-enqueued_at"], name="task_owner_recent"),
            # The claim's count of a limited task's running attempts. Only
            # limited RUNNING rows: other tasks never touch it.
            models.Index(
                fields=["concurrency_key"],
                condition=Q(status=Status.RUNNING, concurrency_limit__isnull=False),
                name="task_running_limited",
            ),
        ]
        constraints = [
            # Unique jobs: one waiting or running record per key, enforced by
            # the database (enqueue inserts with ON CONFLICT DO NOTHING).
            models.UniqueConstraint(
                fields=["unique_key"],
                condition=Q(
                    status__in=[Status.READY, Status.RUNNING], unique_key__isnull=False
                ),
                name="task_unique_active",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.task_name} [{self.status}] {self.id}"

    @property
    def task_name(self) -> str:
        return self.task_path.rsplit(".", 1)[-1]

    @property
    def is_finished(self) -> bool:
        return self.status in FINISHED

    @property
    def last_error(self) -> str:
        """The last line of the last traceback: the reason, for people."""
        if not self.errors:
            return ""
        return error_reason(self.errors[-1])

    def get_task(self):
        """The Task this record calls, as it was enqueued."""
        return _task_for(
            self.task_path, self.queue_name, self.backend, self.priority, self.run_after
        )

    @property
    def all_worker_ids(self) -> list[str]:
        """Workers of every attempt, the running one included."""
        if self.status == Status.RUNNING and self.claimed_by:
            return [*self.worker_ids, self.claimed_by]
        return list(self.worker_ids)

    def to_task_result(self, task=None) -> TaskResult:
        """This record as Django's TaskResult (``task``: the Task, if known)."""
        result = TaskResult(
            task=task or self.get_task(),
            id=self.id,
            status=Status(self.status),
            enqueued_at=self.enqueued_at,
            started_at=self.started_at,
            finished_at=self.finished_at,
            last_attempted_at=self.last_attempted_at,
            args=self.args,
            kwargs=self.kwargs,
            backend=self.backend,
            errors=[TaskError(**error) for error in self.errors],
            worker_ids=self.all_worker_ids,
        )
        object.__setattr__(result, "_return_value", self.return_value)
        return result


def error_reason(error: dict | TaskError) -> str:
    """The last line of an error's traceback (``ValueError: boom``)."""
    if isinstance(error, TaskError):
        traceback, path = error.traceback, error.exception_class_path
    else:
        traceback, path = error["traceback"], error["exception_class_path"]
    lines = traceback.strip().splitlines()
    return lines[-1] if lines else path


@functools.lru_cache(maxsize=512)
def _task_for(task_path, queue_name, backend, priority, run_after):
    """Tasks are frozen dataclasses: one per enqueue-time configuration is shared."""
    task = import_string(task_path)
    return task.using(
        queue_name=queue_name, backend=backend, priority=priority, run_after=run_after
    )


class ScheduleState(models.Model):
    """Where one TASKS_SCHEDULE entry stands (tasks.schedules).

    The row, not Celery beat's own schedule file, holds the next tick: every
    beat process moves ``next_run_at`` with one compare-and-set UPDATE before
    it enqueues, so a tick fires once however many beats see it due.
    """

    name = models.CharField(primary_key=True, max_length=200)
    # The entry as canonical JSON: when settings change it, the schedule
    # starts over from its next tick.
    definition = models.TextField()
    next_run_at = models.DateTimeField()
    last_run_at = models.DateTimeField(null=True, blank=True)
    last_task_id = models.CharField(max_length=64, blank=True)
    # Why the last tick enqueued nothing (empty after a good one).
    last_error = models.TextField(blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name
