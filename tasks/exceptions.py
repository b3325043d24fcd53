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


class UniqueJobRace(JobSystemError):
    """A unique task's equal job kept finishing while it was enqueued."""

    def __init__(self, task_path: str, tries: int) -> None:
        super().__init__(
            f"Could not enqueue {task_path}: its equal unique job finished "
            f"{tries} times while this enqueue looked for it. Try again."
        )


class EqualJobActive(JobSystemError):
    """A unique task's failed record cannot run again while its equal job waits
    or runs (retry it once that one has finished)."""

    def __init__(self, record, equal_id: str | None) -> None:
        self.record, self.equal_id = record, equal_id
        super().__init__(
            f"{record.task_name} ({record.id}) was not retried: an equal job "
            f"({equal_id or 'just finished'}) is already waiting or running."
        )
