"""Concurrency limits: at most N attempts of a task (or per key, or of a
queue) RUNNING at once, across every worker and host.

A record carries its limit and key from enqueue (JobTask.limit). The claim
statements only take a limited record while fewer than its limit of its key
are RUNNING (tasks.record_sql), so records over the limit wait READY and a
slot that finds nothing else waits for a wake-up as usual: no busy loop.
A dead worker's attempt stops counting when it is handed back (its
supervisor at once, the reconciler once its heartbeat is stale).

On SQLite a claim statement holds the write lock from its count to its
write, so the count is exact. On PostgreSQL two claims can count at once and
both see room; so a claim of a limited record happens in a transaction that
takes an advisory lock on its key and counts again (seeing every claim of
that key that committed before the lock was granted), and is rolled back
when it went over. (Every claim on PostgreSQL is in a transaction for this,
which costs an unlimited one its BEGIN and COMMIT round trips, or a
savepoint inside the worker's finish-and-claim transaction.)
"""

from __future__ import annotations

from collections.abc import Callable

from django.core import checks
from django.db import connections, router, transaction
from django.db.models import Count, Min

from tasks import conf
from tasks.base import is_limit
from tasks.models import TaskRecord

# A claim rolled back for its limit is tried again (it then skips that key).
TRIES = 3
# Per concurrency key: (RUNNING count, limit).
Running = dict[str, tuple[int, int]]


def claiming(take: Callable[[], TaskRecord | None]) -> TaskRecord | None:
    """Run the claim ``take`` so that no concurrency limit is exceeded."""
    alias = router.db_for_write(TaskRecord)
    if connections[alias].vendor != "postgresql":
        return take()
    for _ in range(TRIES):
        try:
            with transaction.atomic(using=alias):
                record = take()
                if record is not None and record.concurrency_limit is not None:
                    _recount(record, alias)
                return record
        except _OverLimit:
            continue
    return None


def room(records: list[TaskRecord], running: Running) -> dict[str, int]:
    """For the concurrency keys of limited ``records``: how many more of each
    may start now (what the reconciler re-sends of waiting Celery records),
    given ``running`` (from running_per_key)."""
    limits = {
        r.concurrency_key: r.concurrency_limit
        for r in records
        if r.concurrency_limit is not None
    }
    return {
        key: limit - running.get(key, (0, limit))[0] for key, limit in limits.items()
    }


def full_keys(running: Running) -> list[str]:
    """The concurrency keys of ``running`` that have as many RUNNING as their
    limit."""
    return [key for key, (n, limit) in running.items() if n >= limit]


def running_per_key(keys: list[str] | None = None) -> Running:
    """Per concurrency key (of ``keys``, or every one): (RUNNING count, limit)."""
    running = TaskRecord.objects.running().filter(concurrency_limit__isnull=False)
    if keys is not None:
        running = running.filter(concurrency_key__in=keys)
    rows = (
        running.values_list("concurrency_key")
        .annotate(n=Count("pk"), limit=Min("concurrency_limit"))
        .order_by()
    )
    return {key: (n, limit) for key, n, limit in rows}


@checks.register()
def check_queue_limits(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    """TASKS_QUEUE_CONCURRENCY must map queue names to whole numbers >= 1."""

    limits = conf.get("TASKS_QUEUE_CONCURRENCY")
    if isinstance(limits, dict):
        wrong = sorted(str(q) for q, n in limits.items() if not is_limit(n))
        if not wrong:
            return []
        detail = f"; not so for {', '.join(wrong)}."
    else:
        detail = f", not {type(limits).__name__}."
    return [
        checks.Error(
            "TASKS_QUEUE_CONCURRENCY maps queue names to whole numbers >= 1" + detail,
            hint='For example {"thumbnailer": 4}.',
            id="tasks.E004",
        )
    ]


class _OverLimit(Exception):
    pass


def _recount(record: TaskRecord, alias: str) -> None:
    """Raise _OverLimit if, with this claim, more than the limit run."""
    with connections[alias].cursor() as cursor:
        cursor.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
            [record.concurrency_key],
        )
    running, limit = running_per_key([record.concurrency_key])[record.concurrency_key]
    if running > limit:
        raise _OverLimit
