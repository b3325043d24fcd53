"""Progress reports from inside a running task."""

from __future__ import annotations

import logging

from asgiref.sync import sync_to_async

from tasks import events
from tasks.context import current_record

logger = logging.getLogger(__name__)


def report_progress(fraction: float, message: str = "") -> None:
    """Store and publish how far the current task has got (0..1, short text).

    Call it from a task's body (sync or in a worker thread). Outside a task
    it does nothing, so task functions stay callable directly.
    """
    record = current_record()
    if record is None:
        return
    record.set_progress(fraction, message)
    events.publish(record)


async def areport_progress(fraction: float, message: str = "") -> None:
    """The async twin of report_progress(), for coroutine tasks."""
    record = current_record()
    if record is None:
        return
    await sync_to_async(record.set_progress)(fraction, message)
    await events.apublish(record)
