"""The job system: django.tasks backends on a durable record (tasks.backends).

``enqueue_many`` is the one addition to Django's API; everything else is
``@task`` with our extra options (tasks.base.JobTask).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from django.tasks import Task, TaskResult


def enqueue_many(
    task: Task, calls: Iterable[tuple[list | tuple, dict]]
) -> list[TaskResult]:
    """Enqueue ``task`` once per ``(args, kwargs)`` in ``calls``: all records in
    one statement, their wake-ups in one round trip when the transaction
    commits (at once outside one). Returns one result per call, in order;
    for a unique task an active equal job's result where there is one.

        results = tasks.enqueue_many(make_thumbnails, [((pk,), {}) for pk in ids])
    """
    from django.tasks import task_backends

    backend = task_backends[task.backend]
    if not hasattr(backend, "enqueue_many"):
        return [task.enqueue(*args, **kwargs) for args, kwargs in calls]
    return backend.enqueue_many(task, list(calls))
