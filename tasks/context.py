"""Who enqueues, and which task is running: context the task API has no slot for."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_owner: ContextVar = ContextVar("task_owner", default=None)
_current_record: ContextVar = ContextVar("task_record", default=None)


@contextmanager
def enqueued_by(user) -> Iterator[None]:
    """Tasks enqueued inside this block belong to ``user`` (their events go to
    the user's group; the API and pages show them only to that user)."""
    token = _owner.set(user if getattr(user, "is_authenticated", False) else None)
    try:
        yield
    finally:
        _owner.reset(token)


def current_owner():
    return _owner.get()


def current_record():
    """The TaskRecord being run in this context (None outside a task)."""
    return _current_record.get()


@contextmanager
def running(record) -> Iterator[None]:
    token = _current_record.set(record)
    try:
        yield
    finally:
        _current_record.reset(token)
