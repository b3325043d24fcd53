"""The Celery side of the job system: one generic task that runs a record.

Delivery is guaranteed by Celery (acks_late: the message is acknowledged only
after the run; reject_on_worker_lost: a dead pool child requeues it); retries
are scheduled from the task's own policy and recorded attempt by attempt.

A record's Celery message has the record's id as its task id (so a running
attempt can be revoked), the task's time limit as Celery's hard
``time_limit``, and the task's priority mapped onto the broker's.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import threading

from celery import Task, shared_task
from celery.exceptions import TimeLimitExceeded as CeleryTimeLimitExceeded
from celery.signals import task_prerun, worker_process_init
from django.db import DatabaseError, close_old_connections
from django.tasks.base import TASK_MAX_PRIORITY, TASK_MIN_PRIORITY
from django.utils import timezone

from tasks import execution, lifecycle, outage
from tasks.exceptions import TimeLimitExceeded
from tasks.models import TaskRecord
from tasks.monitor import Monitor

logger = logging.getLogger(__name__)

# Celery's message priorities: 0..9 (the Redis transport serves 0 first;
# settings give it ten priority steps instead of kombu's default four).
BROKER_PRIORITIES = 10


class RecordTask(Task):
    def on_failure(self, exc, task_id, args, kwargs, einfo):
        """Celery killed the pool child at the hard time limit: record it.
        This runs in the worker's main process, before the child is ended
        (so the limit, not how the child ended, is the attempt's error). The
        main process must not wait out a database outage: then the write is
        kept, and tried again in a thread of its own."""
        if not isinstance(exc, CeleryTimeLimitExceeded):
            return
        record_it = functools.partial(_record_time_limit, args[0])
        try:
            record_it()
        except DatabaseError as error:
            if not outage.absorb_database_outage(error):
                raise
            threading.Thread(
                target=outage.until_written, args=(record_it,), daemon=True
            ).start()


@shared_task(
    base=RecordTask,
    name="tasks.run_record",
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
)
def run_record(record_id: str) -> str:
    """Run one TaskRecord; a duplicate or late delivery is a no-op, and a
    record at its concurrency limit waits unsent (tasks.limits). Through a
    database outage the pool process waits (its message unacknowledged) and
    keeps the attempt's outcome until it is written."""
    record = outage.until_written(lambda: lifecycle.claim(record_id, _worker_id()))
    if record is None:
        waiting = outage.until_written(lambda: lifecycle.wait_for_slot(record_id))
        return "waiting" if waiting else "skipped"
    try:
        with _monitor().watching(record):
            return str(execution.run_sync(record))
    finally:
        if record.concurrency_limit is not None:
            outage.until_written(lambda: lifecycle.pass_slot(record))


@shared_task(name="tasks.reconcile", ignore_result=True)
def reconcile() -> dict:
    """The reconciler's sweep, for Celery beat."""
    return _reconciler().sweep().as_dict()


def publish(record: TaskRecord) -> None:
    """Send ``record`` to Celery (at its available_at when that is later)."""
    task = record.get_task()
    later = record.available_at > timezone.now()
    run_record.apply_async(
        (record.id,),
        task_id=record.id,
        queue=record.queue_name,
        eta=record.available_at if later else None,
        priority=broker_priority(record.priority),
        time_limit=task.time_limit,
    )


def terminate(record: TaskRecord) -> None:
    """Kill the pool process running ``record`` (cancelled while running)."""
    run_record.app.control.revoke(record.id, terminate=True, signal="SIGKILL")


def broker_priority(priority: int) -> int:
    """Django's -100..100 (higher first) as the broker's 0..9: on Redis 0 is
    served first, on AMQP 9 (with the queue's x-max-priority set)."""
    span = TASK_MAX_PRIORITY - TASK_MIN_PRIORITY
    step = round((priority - TASK_MIN_PRIORITY) * (BROKER_PRIORITIES - 1) / span)
    if str(run_record.app.conf.broker_url or "").startswith("amqp"):
        return step
    return BROKER_PRIORITIES - 1 - step


@worker_process_init.connect
def _keep_connections(**kwargs) -> None:
    from tasks.worker import keep_database_connections

    keep_database_connections()


@task_prerun.connect
def _check_connections(sender=None, **kwargs) -> None:
    """Drop broken or aged connections before each task (settings say why
    Celery's own closing is turned down)."""
    if not getattr(getattr(sender, "request", None), "is_eager", False):
        close_old_connections()


def _record_time_limit(record_id: str) -> None:
    record = TaskRecord.objects.running().filter(pk=record_id).first()
    if record is not None:
        limit = record.get_task().time_limit
        lifecycle.fail(record, TimeLimitExceeded.after(record.id, limit))


@functools.cache
def _monitor() -> Monitor:
    """Heartbeats only: Celery's time limits and revoke stop its tasks."""
    return Monitor()


@functools.cache
def _reconciler():
    """One per worker process, so each sweep reuses its Redis connection
    instead of opening a new pool every 10 s."""
    from tasks.reconciler import Reconciler

    return Reconciler()


def _worker_id() -> str:
    return f"celery@{socket.gethostname()}:{os.getpid()}"
