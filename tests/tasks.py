"""Task functions used by the suite (one module, importable by worker processes).

Side effects are counted in files, so a test can see how often a task really
ran in another process."""

import os
import time
from pathlib import Path

from django.db.backends.signals import connection_created
from django.tasks import task

from tasks.progress import report_progress


def _mark(path: str, line: str) -> None:
    with open(path, "a") as handle:
        handle.write(line + "\n")


def runs(path: str) -> list[str]:
    """Lines written by tasks to ``path`` (one per run)."""
    file = Path(path)
    return file.read_text().splitlines() if file.exists() else []


@task(queue_name="default")
def add(a: int, b: int) -> int:
    return a + b


@task(queue_name="default")
def noop() -> None:
    return None


@task(queue_name="default")
def record_run(path: str, key: str) -> str:
    _mark(path, f"{key} {os.getpid()}")
    return key


@task(queue_name="default")
def slow_record_run(path: str, key: str, seconds: float, started: str = "") -> str:
    """Mark ``started``, sleep (the window to kill a worker in), mark ``path``."""
    if started:
        _mark(started, f"{key} {os.getpid()}")
    time.sleep(seconds)
    _mark(path, f"{key} {os.getpid()}")
    return key


@task(queue_name="default")
def meet(path: str, key: str, count: int, timeout: float = 30.0) -> int:
    """Mark ``path``, then wait until ``count`` tasks have: only tasks that run
    at the same time all meet."""
    _mark(path, key)
    deadline = time.monotonic() + timeout
    while len(runs(path)) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {len(runs(path))} of {count} met")
        time.sleep(0.01)
    return count


@task(queue_name="default")
def explode(message: str) -> None:
    raise ValueError(message)


@task(queue_name="default")
async def async_add(a: int, b: int) -> int:
    return a + b


@task(queue_name="default")
def with_progress(steps: int) -> int:
    for step in range(1, steps + 1):
        report_progress(step / steps, f"step {step} of {steps}")
    return steps


@task(queue_name="default")
def bad_return() -> object:
    return object()


# The same functions on the Celery backend (same task class, same options).
g_add = add.using(backend="guaranteed")
g_explode = explode.using(backend="guaranteed")
g_slow_record_run = slow_record_run.using(backend="guaranteed")


@task(
    backend="guaranteed",
    queue_name="default",
    max_attempts=3,
    retry_on=(ConnectionError,),
    backoff_base=0.2,
    backoff_cap=1.0,
)
def g_flaky(path: str, fail_times: int) -> int:
    """Fails with ConnectionError the first ``fail_times`` runs, then succeeds."""
    _mark(path, str(time.time()))
    attempt = len(runs(path))
    if attempt <= fail_times:
        raise ConnectionError(f"flaky failure {attempt}")
    return attempt


# Database connections this process opened, for tests of connection reuse.
_connections_opened = []


def _count_connection(sender, connection, **kwargs) -> None:
    _connections_opened.append(connection.alias)


connection_created.connect(_count_connection)


@task(backend="guaranteed", queue_name="default")
def g_connections_opened() -> list:
    """(pid, connections opened so far) in the worker that runs it."""
    return [os.getpid(), len(_connections_opened)]
