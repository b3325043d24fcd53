"""The task class of our backends: Django's ``Task`` plus per-task policy.

Any ``@task`` on our backends accepts these extra options, e.g.::

    @task(backend="guaranteed", max_attempts=5, retry_on=(ConnectionError,),
          timeout=120)
    def call_webhook(url: str) -> int: ...
"""

import random
from dataclasses import dataclass

from django.conf import settings
from django.tasks import Task


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
            self.timeout if self.timeout is not None else settings.TASKS_DEFAULT_TIMEOUT
        )
