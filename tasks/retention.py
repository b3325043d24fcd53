"""Retention: finished task records are deleted once they are old enough.

SUCCESSFUL records go ``TASKS_RESULT_TTL`` after they finished, FAILED ones
after ``TASKS_FAILED_TTL`` (kept longer: they are what someone investigates).
Deletion runs in batches of ``BATCH`` rows, each its own short transaction,
paced (``PAUSE``), so a pass never holds a lock for long and leaves most of
the database's time to claims and finishes. Three ways in: every reconciler
sweep prunes for up to a second, the ``prune-tasks`` schedule runs
``prune_expired`` hourly, and ``manage.py prune_tasks`` does it by hand.

Other apps that point at records (an Image's ``task_id``) hear of each batch
through ``records_pruned`` (sender: TaskRecord, ``ids``: the deleted ids), in
the batch's transaction, and clear their pointers.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timedelta

from django.db import connection, transaction
from django.db.models import QuerySet
from django.dispatch import Signal
from django.tasks import task
from django.utils import timezone

from tasks import conf, outage
from tasks.models import Status, TaskRecord

# Rows per batch, and the pause after each one as a multiple of the time it
# took: pruning keeps the database (SQLite's one write lock, PostgreSQL's
# disk and CPU) a twentieth of the time at most, so claims and finishes
# around it keep their latency (bench/task_features.py). That still deletes
# 250 to 400 rows a second next to a worker that claims without pause.
BATCH = 100
PAUSE = 19.0
records_pruned = Signal()


def expired(
    now: datetime, older_than: timedelta | None = None
) -> list[QuerySet[TaskRecord]]:
    """One queryset per finished status, of the records past their retention
    (``older_than``, when given, for both statuses)."""
    ttls = {
        Status.SUCCESSFUL: conf.get("TASKS_RESULT_TTL"),
        Status.FAILED: conf.get("TASKS_FAILED_TTL"),
    }
    if older_than is not None:
        ttls = dict.fromkeys(ttls, older_than)
    # finished_at >= enqueued_at: bounding enqueued_at too lets the scan run
    # on the (status, enqueued_at) index instead of over every finished row.
    return [
        TaskRecord.objects.filter(
            status=status, enqueued_at__lt=now - ttl, finished_at__lt=now - ttl
        )
        for status, ttl in ttls.items()
    ]


def count_expired(now: datetime, older_than: timedelta | None = None) -> int:
    return sum(queryset.count() for queryset in expired(now, older_than))


def prune(
    now: datetime | None = None,
    *,
    older_than: timedelta | None = None,
    batch: int = BATCH,
    pause: float = PAUSE,
    budget: float | None = None,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Delete expired records, ``batch`` at a time, pausing ``pause`` times
    each batch's duration after it; stop after ``budget`` seconds if given.
    ``progress`` hears each batch's count. Returns how many were deleted."""
    now = now or timezone.now()
    deadline = None if budget is None else time.monotonic() + budget
    deleted = 0
    for queryset in expired(now, older_than):
        while deadline is None or time.monotonic() < deadline:
            batch_started = time.monotonic()
            candidates, count = _delete_batch(queryset, batch)
            deleted += count
            if progress is not None and count:
                progress(count)
            if candidates < batch or not count:
                break  # done (or held by another pass: the next one goes on)
            rest = (time.monotonic() - batch_started) * pause
            if deadline is not None:
                rest = min(rest, max(deadline - time.monotonic(), 0.0))
            time.sleep(rest)
    return deleted


# The scheduled pass stops after this long (the next one goes on), within
# its task's time limit; one pass at a time (unique).
SCHEDULED_BUDGET = 50 * 60.0


@task(unique=True, timeout=SCHEDULED_BUDGET + 600)
def prune_expired() -> int:
    """The ``prune-tasks`` schedule: a pass, in paced batches. A database
    outage on the way pauses it: the pass starts over once the database is
    back (each batch is its own transaction), within its time limit."""
    return outage.until_written(lambda: prune(budget=SCHEDULED_BUDGET))


def _delete_batch(queryset: QuerySet[TaskRecord], batch: int) -> tuple[int, int]:
    """Delete up to ``batch`` of the oldest records of ``queryset``; returns
    (how many were candidates, how many were deleted)."""
    # Chosen before the write transaction, so that SQLite's write lock is
    # held only for the deletion itself.
    oldest_first = queryset.order_by("enqueued_at")
    candidates = list(oldest_first.values_list("pk", flat=True)[:batch])
    if not candidates:
        return 0, 0
    with transaction.atomic():
        if connection.vendor == "postgresql":
            # A deletion lost in a crash is simply done again: its commit
            # need not wait for the disk (nor make the workers' wait longer).
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL synchronous_commit TO OFF")
        # Checked again, and locked (PostgreSQL; SQLite's transaction holds the
        # write lock): a record retried by hand meanwhile stays.
        still = queryset.filter(pk__in=candidates).select_for_update(skip_locked=True)
        ids = list(still.values_list("pk", flat=True))
        if ids:
            records_pruned.send(TaskRecord, ids=ids)
            TaskRecord.objects.filter(pk__in=ids).delete()
    return len(candidates), len(ids)
