"""The job system's own signal, beside Django's ``task_enqueued``,
``task_started`` and ``task_finished`` (which tasks.lifecycle sends too).

``task_retrying``: an attempt failed and the task will run again. Sent
instead of ``task_finished`` (the task is not finished), with the backend's
class as sender, ``task_result`` (status READY, the new error last in
``errors``), ``error`` (the exception) and ``retry_at`` (when the next attempt
may start). It is sent inside the failure's exception context, as Django sends
``task_finished``, and logged here at WARNING with the traceback.
"""

import logging
import sys

from django.dispatch import Signal, receiver

logger = logging.getLogger("django.tasks")

task_retrying = Signal()


@receiver(task_retrying)
def log_task_retrying(sender, task_result, error, retry_at, **kwargs):
    exc_info = sys.exc_info()
    logger.warning(
        "Task id=%s path=%s attempt %d failed; retrying at %s",
        task_result.id,
        task_result.task.module_path,
        task_result.attempts,
        retry_at.isoformat(),
        exc_info=exc_info if exc_info[0] else None,
    )
