"""Progress reports from inside a running task."""

from __future__ import annotations

from asgiref.sync import sync_to_async

from tasks import lifecycle
from tasks.context import current_record


def report_progress(fraction: float, message: str = "") -> None:
    """Store and publish how far the current task has got (0..1, short text).

    Call it from a task's body. Outside a task it does nothing, so task
    functions stay callable directly.
    """
    record = current_record()
    if record is not None:
        lifecycle.set_progress(record, fraction, message)


async def areport_progress(fraction: float, message: str = "") -> None:
    """report_progress() for coroutine tasks (the database write runs in a thread)."""
    record = current_record()
    if record is not None:
        await sync_to_async(lifecycle.set_progress)(record, fraction, message)
