"""The task class of our backends: Django's ``Task`` plus per-task policy.

Any ``@task`` on our backends accepts these extra options, e.g.::

    @task(backend="guaranteed", max_attempts=5, retry_on=(ConnectionError,),
          timeout=120, concurrency=4, concurrency_key=lambda a, kw: host(a[0]))
    def call_webhook(url: str) -> int: ...

    @task(unique=True)  # one waiting or running job per argument set
    def rebuild_index(section: str) -> None: ...
"""

from __future__ import annotations

import hashlib
import inspect
import json
import random
from collections.abc import Callable
from dataclasses import dataclass

from django.core.exceptions import ImproperlyConfigured
from django.tasks import Task

from tasks import conf

# Called with the enqueued (args, kwargs), as JSON data.
KeyFunction = Callable[[list, dict], str]


@dataclass(frozen=True, slots=True, kw_only=True)
class JobTask(Task):
    # Runs at most this many times, counting runs lost with a dead worker.
    max_attempts: int = 3
    # Exceptions that schedule another attempt; anything else fails at once.
    retry_on: tuple[type[BaseException], ...] = ()
    # Exponential backoff between attempts, seconds: base * 2**(n-1), capped,
    # with full jitter so that retries of many tasks do not arrive together.
    backoff_base: float = 1.0
    backoff_cap: float = 300.0
    # Seconds an attempt may run before it is stopped (TimeLimitExceeded);
    # None: settings.TASKS_DEFAULT_TIMEOUT.
    timeout: float | None = None
    # Unique jobs: while a record with the same key is READY or RUNNING,
    # enqueue returns it instead of a new one. ``unique=True`` keys on the
    # arguments (bound to the signature, so f(1) and f(x=1) are one job);
    # ``unique_key`` computes the key itself.
    unique: bool = False
    unique_key: KeyFunction | None = None
    # Concurrency limit: at most this many attempts RUNNING at once across
    # every worker (per ``concurrency_key``'s value when given, e.g. per host).
    concurrency: int | None = None
    concurrency_key: KeyFunction | None = None

    def retry_delay(self, attempt: int) -> float:
        """Seconds to wait before attempt ``attempt + 1``."""
        ceiling = min(self.backoff_cap, self.backoff_base * 2 ** max(attempt - 1, 0))
        return random.uniform(ceiling / 2, ceiling)  # noqa: S311 (not crypto)

    def should_retry(self, error: BaseException, attempt: int) -> bool:
        return attempt < self.max_attempts and isinstance(error, self.retry_on)

    @property
    def time_limit(self) -> float:
        """Seconds an attempt of this task may run."""
        return (
            self.timeout
            if self.timeout is not None
            else conf.get("TASKS_DEFAULT_TIMEOUT")
        )

    def uniqueness_key(self, args: list, kwargs: dict) -> str | None:
        """The record's unique key (a digest of the lane, the task and the key),
        or None for a task that is not unique. Who enqueues is not part of it:
        a ``unique_key`` that includes the user makes per-user jobs."""
        if self.unique_key is not None:
            key = str(self.unique_key(args, kwargs))
        elif self.unique:
            key = json.dumps(self._bound(args, kwargs), sort_keys=True)
        else:
            return None
        # The lane is part of the job: the same call on another backend is
        # another job (and the result of this one must be readable there).
        identity = f"{self.backend}\n{self.module_path}\n{key}"
        return hashlib.sha256(identity.encode()).hexdigest()

    def limit(self, args: list, kwargs: dict) -> tuple[str, int] | None:
        """(concurrency key, limit) of a record of this task, or None if it
        is not limited: the task's own ``concurrency``, else its queue's
        (settings.TASKS_QUEUE_CONCURRENCY)."""
        if self.concurrency is not None:
            key = self.module_path
            if self.concurrency_key is not None:
                key = f"{key}:{self.concurrency_key(args, kwargs)}"
            return key[:255], self.concurrency
        queue_limit = conf.get("TASKS_QUEUE_CONCURRENCY").get(self.queue_name)
        if queue_limit is None:
            return None
        if not is_limit(queue_limit):
            # (tasks.E004 says so too; Celery and Daphne run no checks.)
            raise ImproperlyConfigured(
                f"TASKS_QUEUE_CONCURRENCY[{self.queue_name!r}] must be a whole "
                f"number >= 1, not {queue_limit!r}."
            )
        return f"queue:{self.backend}:{self.queue_name}", queue_limit

    def _bound(self, args: list, kwargs: dict) -> dict:
        """The call's arguments by parameter name, defaults filled in."""
        signature = inspect.signature(self.func)
        if self.takes_context:
            args = [None, *args]
        try:
            bound = signature.bind(*args, **kwargs)
        except TypeError:
            return {"args": args, "kwargs": kwargs}  # the run will say what is wrong
        bound.apply_defaults()
        arguments = dict(bound.arguments)
        if self.takes_context:
            arguments.pop(next(iter(signature.parameters)))
        return arguments


def is_limit(value) -> bool:
    """A concurrency limit: a whole number >= 1 (not a bool)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1
