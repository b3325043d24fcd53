"""Progress reports from inside a running task."""

from __future__ import annotations

from asgiref.sync import sync_to_async
from django.db import DatabaseError

from tasks import lifecycle, outage
from tasks.context import current_record


def report_progress(fraction: float, message: str = "") -> None:
    """Store and publish how far the current task has got (0..1, short text).

    Call it from a task's body. Outside a task it does nothing, so task
    functions stay callable directly. While the database is down the report
    is kept, not raised: the task goes on, and the attempt's next heartbeat
    writes its latest progress.
    """
    record = current_record()
    if record is None:
        return
    try:
        lifecycle.set_progress(record, fraction, message)
    except DatabaseError as error:
        if not outage.absorb_database_outage(error):
            raise


async def areport_progress(fraction: float, message: str = "") -> None:
    """report_progress() for coroutine tasks (the database write runs in a thread)."""
    record = current_record()
    if record is not None:
        await sync_to_async(report_progress)(fraction, message)
