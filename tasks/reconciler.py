"""The reconciler: what workers cannot do for themselves.

Workers claim READY records from the database, so no Channels record waits on
a lost wake-up. Three things still need a sweep from outside:

- a RUNNING record whose attempt stopped heart-beating (its worker killed
  with its supervisor, a machine lost, a hung process, or an attempt that no
  slot of a live process holds) is handed back: READY again until the
  task's attempt limit, then FAILED with WorkerLost. (A worker process that
  dies under a supervisor is handed back by the supervisor at once; this
  catches the rest.) Right after a database outage no heartbeat is judged
  for one stale grace: no worker could write one while it lasted.
- finished records past their retention are deleted, a few batches per
  sweep (tasks.retention).
- a Celery record is only run when Celery delivers its message: one never
  sent (broker down at enqueue, deferred until now) or sent long ago and
  still READY (message lost) is published again.

One process sweeps at a time (a Redis lock).
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import timedelta

import redis
from django.db import DatabaseError, close_old_connections, connection
from django.utils import timezone

from tasks import conf, lifecycle, limits, outage, redis_client, retention
from tasks.backends import channels_aliases
from tasks.models import Status, TaskRecord

logger = logging.getLogger(__name__)

LOCK_KEY = "tasks:reconciler:lock"
# A sweep that met a database outage marks it here; the first sweep after it
# turns the mark into RETURN_KEY, which lives for the stale grace.
OUTAGE_KEY = "tasks:reconciler:database-down"
RETURN_KEY = "tasks:reconciler:database-back"
OUTAGE_MEMORY = 24 * 3600
BATCH = 500
# Seconds of each sweep spent deleting expired records (tasks.retention), in
# batches: a backlog of them is worked off over a few sweeps.
PRUNE_BUDGET = 1.0


@dataclass
class SweepReport:
    resent: int = 0
    requeued: int = 0
    failed: int = 0
    pruned: int = 0
    skipped: bool = False  # another process holds the lock
    unavailable: str = ""  # "Database" or "Redis": the sweep could not run

    def as_dict(self) -> dict:
        return asdict(self)


class Reconciler:
    def __init__(self) -> None:
        self.resend_after = timedelta(seconds=conf.get("TASKS_RESEND_AFTER_SECONDS"))
        self.stale_after = timedelta(seconds=conf.get("TASKS_STALE_AFTER_SECONDS"))
        self._redis = redis_client.client(timeout=5.0)
        self._token = uuid.uuid4().hex

    def sweep(self) -> SweepReport:
        """One pass; a failure on one record is logged and never stops the
        rest. Through an outage of the database or Redis the pass stops (the
        outage is logged once) and the next one starts over."""
        lock_ttl = max(int(self.stale_after.total_seconds()), 10)
        try:
            if not self._redis.set(LOCK_KEY, self._token, nx=True, ex=lock_ttl):
                return SweepReport(skipped=True)
        except redis.RedisError as error:
            outage.redis.failed(error)
            return SweepReport(unavailable=outage.redis.name)
        outage.redis.answered()
        report = SweepReport()
        try:
            close_old_connections()  # one broken in the last outage, say
            down, back = self._redis.mget(OUTAGE_KEY, RETURN_KEY)
            if down is None and back is None:
                self._recover_stale(report)
            self._redeliver(report)
            self._prune(report)
            _checkpoint_sqlite()
            if down is not None:
                self._remember_return()
        except DatabaseError as error:
            if not outage.absorb_database_outage(error):
                raise
            self._remember_outage()
            return SweepReport(unavailable=outage.database.name)
        except redis.RedisError as error:
            outage.redis.failed(error)
            return SweepReport(unavailable=outage.redis.name)
        finally:
            self._release()
        outage.database.answered()
        if report.resent or report.requeued or report.failed or report.pruned:
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
        """Hand back each RUNNING record whose own attempt stopped
        heart-beating, whether or not its worker process is alive (an attempt
        no slot holds any more has no one to beat for it)."""
        now = timezone.now()
        for record in TaskRecord.objects.stale(now, self.stale_after)[:BATCH]:
            reason = (
                f"Worker {record.claimed_by or '?'} stopped heart-beating "
                f"during attempt {record.attempts} of {record.max_attempts}."
            )
            try:
                status = lifecycle.hand_back(record, reason)
            except Exception as error:
                _log_unless_outage(error, "Could not recover task id=%s", record.id)
                continue
            report.requeued += status == Status.READY
            report.failed += status == Status.FAILED

    def _remember_return(self) -> None:
        """The database answers again after an outage: no heartbeat is judged
        for one stale grace (no worker could write one while it lasted, and
        each needs a moment to beat again). The marks are in Redis, so every
        process that sweeps sees them."""
        grace = max(int(self.stale_after.total_seconds()), 1)
        self._redis.pipeline().set(RETURN_KEY, 1, ex=grace).delete(OUTAGE_KEY).execute()
        logger.info(
            "Database back: running tasks are judged by their heartbeats again in %d s",
            grace,
        )

    def _remember_outage(self) -> None:
        try:
            self._redis.set(OUTAGE_KEY, 1, ex=OUTAGE_MEMORY)
        except redis.RedisError as error:
            outage.redis.failed(error)

    def _redeliver(self, report: SweepReport) -> None:
        now = timezone.now()
        running = limits.running_per_key()
        pending = (
            TaskRecord.objects.unsent_or_lost(now, self.resend_after)
            .exclude(backend__in=channels_aliases())
            # Records waiting for a full key's slot: not now, and not in the
            # way of the others (a backlog of them would fill every batch).
            .exclude(concurrency_key__in=limits.full_keys(running))
            .order_by("enqueued_at")
        )
        pending = list(pending[:BATCH])
        # Records waiting for a concurrency slot: only as many as have room.
        free = limits.room(pending, running)
        for record in pending:
            key = record.concurrency_key
            if record.concurrency_limit is not None:
                if free[key] <= 0:
                    continue
                free[key] -= 1
            try:
                report.resent += lifecycle.redeliver(record, now)
            except Exception as error:
                _log_unless_outage(error, "Could not re-send task id=%s", record.id)

    def _prune(self, report: SweepReport) -> None:
        try:
            report.pruned = retention.prune(budget=PRUNE_BUDGET)
        except Exception as error:
            _log_unless_outage(error, "Could not prune finished records")

    def _release(self) -> None:
        # Release only our own lock (it may have expired and been taken).
        try:
            if self._redis.get(LOCK_KEY) == self._token.encode():
                self._redis.delete(LOCK_KEY)
        except redis.RedisError as error:
            outage.redis.failed(error)  # the lock expires by itself


def _log_unless_outage(error: Exception, message: str, *args) -> None:
    """Log one record's failure with its traceback; an outage of the
    database goes on up, to stop the sweep (logged once)."""
    if outage.is_database_outage(error):
        raise error
    logger.exception(message, *args)


def _checkpoint_sqlite() -> None:
    """Move SQLite's write-ahead log into the database here, in the background,
    rather than in whichever worker's commit crosses the autocheckpoint size
    (a checkpoint fsyncs: a latency spike on the task that pays for it).
    PASSIVE never waits for, nor blocks, other connections."""
    if connection.vendor == "sqlite":
        with connection.cursor() as cursor:
            cursor.execute("PRAGMA wal_checkpoint(PASSIVE)")
