"""Task events on channel-layer groups, for the realtime app to forward.

Every status change and progress report of a task that has an owner is
published (by tasks.lifecycle) as ``{"type": "task.update", ...}`` to the
owner's group and the task's group. Only owners may listen
(realtime.consumers), so tasks without an owner publish nothing and pay no
Redis round trips. Events are best-effort (a full group drops them); the
record is the truth.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tasks import transport

if TYPE_CHECKING:
    from tasks.models import TaskRecord


def owner_group(user_id: int) -> str:
    return f"tasks.owner.{user_id}"


def task_group(task_id: str) -> str:
    return f"tasks.task.{task_id}"


def task_update(record: TaskRecord) -> dict:
    """The event for a record's current state (JSON-safe)."""
    return {
        "type": "task.update",
        "id": record.id,
        "task": record.task_path,
        "queue": record.queue_name,
        "status": str(record.status),
        "attempts": record.attempts,
        "progress": record.progress,
        "message": record.progress_message,
        "error": record.last_error,
    }


def publish(record: TaskRecord) -> None:
    """Send the record's current state to its owner's and its own group."""
    if record.owner_id is None:
        return
    event = task_update(record)
    for group in (task_group(record.id), owner_group(record.owner_id)):
        transport.group_send(group, event)
