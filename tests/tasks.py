"""Task functions used by the suite (one module, importable by worker processes).

Side effects are counted in files, so a test can see how often a task really
ran in another process."""

import asyncio
import os
import sys
import time
from pathlib import Path

from django.db import connection
from django.db.backends.signals import connection_created
from django.tasks import task
from django.tasks.signals import task_started

from tasks.exceptions import TimeLimitExceeded
from tasks.progress import report_progress


def _mark(path: str, line: str) -> None:
    with open(path, "a") as handle:
        handle.write(line + "\n")


def runs(path: str) -> list[str]:
    """Lines written by tasks to ``path`` (one per run)."""
    file = Path(path)
    return file.read_text().splitlines() if file.exists() else []


def signal_logger(path: str, name: str):
    """A receiver of a task signal that appends ``"<name> <task id>"`` to
    ``path``. Processes share the file: its lines are in the order the
    signals were sent, whichever process sent them."""

    def receiver(sender, task_result, **kwargs) -> None:
        _mark(path, f"{name} {task_result.id}")

    return receiver


# A worker process started with TEST_SIGNAL_LOG logs its task_started there
# (connected when a worker first imports this module, to run a task: before
# that task's task_started is sent).
if os.environ.get("TEST_SIGNAL_LOG"):
    task_started.connect(
        signal_logger(os.environ["TEST_SIGNAL_LOG"], "started"), weak=False
    )


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
async def aslow_record_run(path: str, key: str, seconds: float, started: str) -> str:
    """slow_record_run() as a coroutine task."""
    _mark(started, f"{key} {os.getpid()}")
    await asyncio.sleep(seconds)
    _mark(path, f"{key} {os.getpid()}")
    return key


@task(queue_name="default", timeout=1.0)
def overrun(started: str, seconds: float) -> None:
    """Runs past its one-second time limit."""
    _mark(started, str(os.getpid()))
    time.sleep(seconds)


@task(queue_name="default", timeout=1.0)
async def aoverrun(started: str, seconds: float) -> None:
    _mark(started, str(os.getpid()))
    await asyncio.sleep(seconds)


@task(
    queue_name="default",
    timeout=1.0,
    retry_on=(TimeLimitExceeded,),
    max_attempts=2,
    backoff_base=0.1,
    backoff_cap=0.2,
)
def overrun_once(path: str) -> int:
    """Runs past its time limit the first time only."""
    _mark(path, str(os.getpid()))
    if len(runs(path)) == 1:
        time.sleep(60)
    return len(runs(path))


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


# The ways a task can leave the interpreter, and what each fails with.
EXITS = {
    "sys.exit": "builtins.SystemExit",
    "exit": "builtins.SystemExit",
    "SystemExit": "builtins.SystemExit",
    "KeyboardInterrupt": "builtins.KeyboardInterrupt",
}


@task(queue_name="default")
def leave(how: str) -> None:
    """Leave the interpreter as ``how`` says; a worker must outlive it."""
    if how == "sys.exit":
        sys.exit(3)
    if how == "exit":
        exit(4)  # the builtin, as a script would call it
    if how == "SystemExit":
        raise SystemExit("leaving through SystemExit")
    raise KeyboardInterrupt("interrupted by the task itself")


@task(
    queue_name="default",
    max_attempts=3,
    retry_on=(ConnectionError,),
    backoff_base=0.2,
    backoff_cap=1.0,
)
def flaky(path: str, fail_times: int) -> int:
    """Fails with ConnectionError the first ``fail_times`` runs, then succeeds."""
    _mark(path, str(time.time()))
    attempt = len(runs(path))
    if attempt <= fail_times:
        raise ConnectionError(f"flaky failure {attempt}")
    return attempt


@task(queue_name="default", unique=True)
def unique_add(a: int, b: int = 0) -> int:
    return a + b


@task(queue_name="default", unique_key=lambda args, kwargs: str(args[0]))
def unique_per_name(name: str, detail: str) -> str:
    return f"{name} {detail}"


@task(queue_name="default", concurrency=2)
def limited_nap(path: str, seconds: float) -> float:
    """Two at most at once. Sleeps, so that runs overlap where allowed, and
    marks ``path`` with when it ran (start and end, inside the attempt)."""
    started = time.time()
    time.sleep(seconds)
    _mark(path, f"{started} {time.time()}")
    return seconds


@task(
    queue_name="default",
    concurrency=1,
    concurrency_key=lambda args, kwargs: args[1],
)
def one_per_key(path: str, key: str, seconds: float) -> str:
    """limited_nap(), one at a time per ``key``."""
    started = time.time()
    time.sleep(seconds)
    _mark(path, f"{started} {time.time()} {key}")
    return key


# The same functions on the Celery backend (same task class, same options).
g_add = add.using(backend="guaranteed")
g_record_run = record_run.using(backend="guaranteed")
g_explode = explode.using(backend="guaranteed")
g_slow_record_run = slow_record_run.using(backend="guaranteed")
g_leave = leave.using(backend="guaranteed")
g_flaky = flaky.using(backend="guaranteed")
g_overrun = overrun.using(backend="guaranteed")
g_unique_add = unique_add.using(backend="guaranteed")
g_limited_nap = limited_nap.using(backend="guaranteed")


# Database connections this process opened, for tests of connection reuse.
_connections_opened = []


def _count_connection(sender, connection, **kwargs) -> None:
    _connections_opened.append(connection.alias)


connection_created.connect(_count_connection)


@task(backend="guaranteed", queue_name="default")
def g_connection_in_use() -> list:
    """(pid, connections opened so far) in the worker that runs it: on
    PostgreSQL, by the process' pool (a pooled connection is taken for each
    task and given back, but not opened anew); on SQLite, by Django."""
    connection.ensure_connection()
    if connection.vendor == "postgresql":
        return [os.getpid(), connection.pool.get_stats()["connections_num"]]
    return [os.getpid(), len(_connections_opened)]
