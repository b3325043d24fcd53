"""Errors of the job system, under one base."""


class JobSystemError(Exception):
    """Base class of the job system's errors."""


class TransportUnavailable(JobSystemError):
    """A wake-up message could not be sent (Redis down, channel full).

    Never raised to callers of ``enqueue``: the record is kept, workers claim
    it from the database anyway, and the reconciler re-sends Celery ones.
    """


class TaskCancelled(JobSystemError):
    """The task was cancelled (before or while it ran); it is never retried."""


class WorkerLost(JobSystemError):
    """The worker running the task died, or stopped heart-beating."""


class TimeLimitExceeded(JobSystemError):
    """The task ran longer than its time limit and was stopped."""

    @classmethod
    def after(cls, record_id: str, seconds: float) -> "TimeLimitExceeded":
        return cls(
            f"Task id={record_id} ran longer than its time limit of {seconds:g} s "
            "and was stopped."
        )
