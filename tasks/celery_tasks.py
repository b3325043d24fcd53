"""The Celery side of the job system: one generic task that runs a record.

Delivery is guaranteed by Celery (acks_late: the message is acknowledged only
after the run; reject_on_worker_lost: a dead pool child requeues it), retries
are scheduled from the task's own policy and recorded attempt by attempt.
"""

from __future__ import annotations

import functools
import logging
import os
import socket

from celery import shared_task
from celery.signals import task_prerun, worker_process_init
from django.db import close_old_connections

from tasks import execution
from tasks.models import Status, TaskRecord

logger = logging.getLogger(__name__)


@shared_task(
    name="tasks.run_record",
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
)
def run_record(record_id: str) -> str:
    """Run one TaskRecord; a duplicate or late delivery is a no-op."""
    outcome = execution.run(record_id, _worker_id())
    if outcome.status == Status.READY and outcome.retry_at is not None:
        record = TaskRecord.objects.get(pk=record_id)
        publish(record)
    return str(outcome.status)


@shared_task(name="tasks.reconcile", ignore_result=True)
def reconcile() -> dict:
    """The reconciler's sweep, for Celery beat."""
    return _reconciler().sweep().as_dict()


@functools.cache
def _reconciler():
    """One per worker process, so each sweep reuses its Redis connection
    instead of opening a new pool every 10 s."""
    from tasks.reconciler import Reconciler

    return Reconciler()


def publish(record: TaskRecord) -> None:
    """Send ``record`` to Celery, at its run_after when deferred."""
    run_record.apply_async((record.id,), queue=record.queue_name, eta=record.run_after)


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


def _worker_id() -> str:
    return f"celery@{socket.gethostname()}:{os.getpid()}"
