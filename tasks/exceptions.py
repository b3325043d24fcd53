"""Errors of the job system, under one base."""

from django.core.exceptions import ImproperlyConfigured


class JobSystemError(Exception):
    """Base class of the job system's errors."""


class TransportUnavailable(JobSystemError):
    """A wake-up message could not be sent (Redis down, channel full).

    Never raised to callers of ``enqueue``: the record is kept and the
    reconciler sends it later.
    """


class ResultNotSerializable(JobSystemError):
    """A task returned a value that cannot be stored as JSON."""


class TaskCancelled(JobSystemError):
    """A task was cancelled before it ran."""


class WorkerLost(JobSystemError):
    """The worker running a task stopped heart-beating (killed, crashed)."""


class JobSystemMisconfigured(ImproperlyConfigured):
    """A TASKS backend's options are invalid."""
