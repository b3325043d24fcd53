"""The durable task record: the truth about every job, whichever transport runs it."""

from __future__ import annotations

import functools
import secrets
from datetime import datetime, timedelta

from django.conf import settings
from django.db import models
from django.db.models import F, Q, Value
from django.db.models.functions import Coalesce
from django.tasks import TaskResultStatus
from django.tasks.base import TaskError, TaskResult
from django.utils import timezone
from django.utils.module_loading import import_string

from tasks import statements

Status = TaskResultStatus
FINISHED = (Status.SUCCESSFUL, Status.FAILED)


def new_task_id() -> str:
    """32 hex digits (128 random bits): as unguessable as needed, and ten
    times cheaper than get_random_string(32) on the enqueue path."""
    return secrets.token_hex(16)


class TaskRecordQuerySet(models.QuerySet):
    def ready(self) -> TaskRecordQuerySet:
        return self.filter(status=Status.READY)

    def running(self) -> TaskRecordQuerySet:
        return self.filter(status=Status.RUNNING)

    def failed(self) -> TaskRecordQuerySet:
        return self.filter(status=Status.FAILED)

    def successful(self) -> TaskRecordQuerySet:
        return self.filter(status=Status.SUCCESSFUL)

    def due(self, now: datetime) -> TaskRecordQuerySet:
        """READY records whose run_after has come."""
        return self.ready().filter(Q(run_after__isnull=True) | Q(run_after__lte=now))

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
    run_after = models.DateTimeField(null=True, blank=True)
    # When the last wake-up message was sent; null: not (successfully) sent.
    sent_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    last_attempted_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    progress = models.FloatField(default=0.0)
    progress_message = models.CharField(max_length=200, blank=True)
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
        # SQLite write lock). The reconciler and the admin read by status,
        # oldest or newest first; the reconciler only ever scans the active
        # rows (READY, RUNNING), never the finished history.
        indexes = [
            models.Index(fields=["status", "enqueued_at"], name="task_status_enqueued"),
            # A user's own jobs, newest first (pages, API, events).
            models.Index(fields=["owner", "-enqueued_at"], name="task_owner_recent"),
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
        lines = self.errors[-1]["traceback"].strip().splitlines()
        return lines[-1] if lines else self.errors[-1]["exception_class_path"]

    def get_task(self):
        """The Task object this record calls, as configured at enqueue time."""
        return _task_for(self.task_path, self.queue_name, self.backend)

    @property
    def all_worker_ids(self) -> list[str]:
        """Workers of every attempt, the running one included."""
        if self.status == Status.RUNNING and self.claimed_by:
            return [*self.worker_ids, self.claimed_by]
        return list(self.worker_ids)

    def to_task_result(self) -> TaskResult:
        result = TaskResult(
            task=self.get_task(),
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

    # --- Transitions: each is one conditional UPDATE, safe across processes.

    @classmethod
    def claim(cls, record_id: str, worker_id: str) -> TaskRecord | None:
        """READY -> RUNNING for one worker; None when someone else has it (or
        it is finished, cancelled or not yet due). One conditional UPDATE:
        of two workers given the same message, exactly one wins."""
        now = timezone.now()
        if statements.supports_returning(cls):
            return statements.claim_returning(
                cls, record_id, worker_id, now, Status.READY, Status.RUNNING
            )
        claimed = (
            cls.objects.due(now)
            .filter(pk=record_id)
            .update(
                status=Status.RUNNING,
                attempts=F("attempts") + 1,
                started_at=Coalesce(F("started_at"), Value(now)),
                last_attempted_at=now,
                heartbeat_at=now,
                claimed_by=worker_id,
                progress=0.0,
                progress_message="",
            )
        )
        return cls.objects.get(pk=record_id) if claimed else None

    def heartbeat(self) -> bool:
        """Refresh the heartbeat; False when the record is no longer ours."""
        return bool(
            TaskRecord.objects.filter(pk=self.pk, status=Status.RUNNING)
            .filter(attempts=self.attempts)
            .update(heartbeat_at=timezone.now())
        )

    def set_successful(self, return_value) -> None:
        self.worker_ids = self.all_worker_ids
        self.status = Status.SUCCESSFUL
        self.return_value = return_value
        self.finished_at = timezone.now()
        self.progress = 1.0
        self._save_if_current(
            "status", "return_value", "finished_at", "progress", "worker_ids"
        )

    def set_failed(self, error: dict, *, retry_at: datetime | None = None) -> None:
        """Record a failed attempt: back to READY at ``retry_at``, else FAILED."""
        self.errors = [*self.errors, error]
        self.worker_ids = self.all_worker_ids
        if retry_at is not None:
            self.status = Status.READY
            self.run_after = retry_at
            self.sent_at = None
        else:
            self.status = Status.FAILED
            self.finished_at = timezone.now()
        self._save_if_current(
            "status", "errors", "run_after", "sent_at", "finished_at", "worker_ids"
        )

    def set_progress(self, fraction: float, message: str) -> None:
        self.progress = min(max(float(fraction), 0.0), 1.0)
        self.progress_message = message[:200]
        self._save_if_current("progress", "progress_message", "heartbeat_at")

    def _save_if_current(self, *fields: str) -> bool:
        """Save only if this attempt still owns the record (the reconciler may
        have given it to another worker after a stale heartbeat)."""
        if "heartbeat_at" in fields:
            self.heartbeat_at = timezone.now()
        return statements.update_if_current(self, fields, Status.RUNNING)


@functools.lru_cache(maxsize=512)
def _task_for(task_path: str, queue_name: str, backend: str):
    """Tasks are frozen dataclasses: one per (path, queue, backend) is shared."""
    task = import_string(task_path)
    return task.using(queue_name=queue_name, backend=backend)
