"""The reconciler: makes best-effort delivery at-least-once.

It re-sends READY records that were never sent or whose message was lost
(expired, channel full, Redis restarted), and gives RUNNING records whose
worker stopped heart-beating to another worker, until their attempt limit;
then it marks them FAILED with the reason. One process sweeps at a time.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import timedelta

import redis
from django.conf import settings
from django.db import connection
from django.tasks import task_backends
from django.utils import timezone

from tasks import events
from tasks.models import Status, TaskRecord

logger = logging.getLogger(__name__)

LOCK_KEY = "tasks:reconciler:lock"
BATCH = 500


@dataclass
class SweepReport:
    resent: int = 0
    requeued: int = 0
    failed: int = 0
    skipped: bool = False  # another process holds the lock

    def as_dict(self) -> dict:
        return asdict(self)


class Reconciler:
    def __init__(self) -> None:
        self.resend_after = timedelta(seconds=settings.TASKS_RESEND_AFTER_SECONDS)
        self.stale_after = timedelta(seconds=settings.TASKS_STALE_AFTER_SECONDS)
        self._redis = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=5)
        self._token = uuid.uuid4().hex

    def sweep(self) -> SweepReport:
        """One pass; a failure on one record is logged and never stops the rest."""
        lock_ttl = max(int(self.stale_after.total_seconds()), 10)
        if not self._redis.set(LOCK_KEY, self._token, nx=True, ex=lock_ttl):
            return SweepReport(skipped=True)
        try:
            report = SweepReport()
            self._recover_stale(report)
            self._resend(report)
            _checkpoint_sqlite()
        finally:
            self._release()
        if report.resent or report.requeued or report.failed:
            logger.info("Reconciler: %s", report.as_dict())
        return report

    def loop(self, interval: float) -> None:
        """Sweep every ``interval`` seconds until interrupted."""
        while True:
            try:
                self.sweep()
            except Exception:
                logger.exception("Reconciler sweep failed; trying again")
            time.sleep(interval)

    def _recover_stale(self, report: SweepReport) -> None:
        now = timezone.now()
        for record in TaskRecord.objects.stale(now, self.stale_after)[:BATCH]:
            try:
                self._recover(record, report)
            except Exception:
                logger.exception("Could not recover task id=%s", record.id)

    def _recover(self, record: TaskRecord, report: SweepReport) -> None:
        lost = record.heartbeat_at
        owned = TaskRecord.objects.filter(
            pk=record.pk, status=Status.RUNNING, heartbeat_at=lost
        )
        reason = (
            f"Worker {record.claimed_by or '?'} stopped "
            f"heart-beating during attempt {record.attempts} of {record.max_attempts}."
        )
        error = {
            "exception_class_path": "tasks.exceptions.WorkerLost",
            "traceback": reason,
        }
        if record.attempts >= record.max_attempts:
            updated = owned.update(
                status=Status.FAILED,
                finished_at=timezone.now(),
                errors=[*record.errors, error],
                worker_ids=record.all_worker_ids,
            )
            report.failed += updated
        else:
            updated = owned.update(
                status=Status.READY,
                sent_at=None,
                errors=[*record.errors, error],
                worker_ids=record.all_worker_ids,
            )
            report.requeued += updated
        if updated:
            logger.warning("Task id=%s: %s", record.id, reason)
            record.refresh_from_db()
            events.publish(record)

    def _resend(self, report: SweepReport) -> None:
        now = timezone.now()
        pending = TaskRecord.objects.unsent_or_lost(now, self.resend_after)
        for record in pending.order_by("enqueued_at")[:BATCH]:
            try:
                stamped = TaskRecord.objects.filter(
                    pk=record.pk, status=Status.READY, sent_at=record.sent_at
                ).update(sent_at=now)
                if not stamped:
                    continue  # claimed or re-sent meanwhile
                record.sent_at = now
                if task_backends[record.backend].deliver(record):
                    report.resent += 1
            except Exception:
                logger.exception("Could not re-send task id=%s", record.id)

    def _release(self) -> None:
        # Release only our own lock (it may have expired and been taken).
        if self._redis.get(LOCK_KEY) == self._token.encode():
            self._redis.delete(LOCK_KEY)


def _checkpoint_sqlite() -> None:
    """Move SQLite's write-ahead log into the database here, in the background,
    rather than in whichever worker's commit crosses the autocheckpoint size
    (a checkpoint fsyncs: a latency spike on the task that pays for it).
    PASSIVE never waits for, nor blocks, other connections."""
    if connection.vendor == "sqlite":
        with connection.cursor() as cursor:
            cursor.execute("PRAGMA wal_checkpoint(PASSIVE)")
