"""Task events on channel-layer groups, for the realtime app to forward.

Every status change and progress report of a task that has an owner is
published (by tasks.lifecycle) as ``{"type": "task.update", ...}`` to the
owner's group and the task's group, with the record's ``seq``: the sequence
number each such write bumps, so a client can drop an event older than the
state it has. Other apps publish their own events the same way (``send``).
Only owners may listen (realtime.consumers), so tasks without an owner
publish nothing and pay no Redis round trips. Events are best-effort (a full
group drops them); the record is the truth.
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
        "backend": record.backend,
        "queue": record.queue_name,
        "status": str(record.status),
        "attempts": record.attempts,
        "max_attempts": record.max_attempts,
        "progress": record.progress,
        "message": record.progress_message,
        "error": record.last_error,
        "seq": record.sequence,
    }


def publish(record: TaskRecord) -> None:
    """Send the record's current state to its owner's and its own group."""
    if record.owner_id is not None:
        send(task_update(record), owner_id=record.owner_id, task_id=record.id)


def send(event: dict, *, owner_id: int, task_id: str = "") -> None:
    """Send ``event`` to the owner's group, and to the task's when it has one."""
    groups = [owner_group(owner_id)] + ([task_group(task_id)] if task_id else [])
    for group in groups:
        transport.group_send(group, event)
