"""Nothing lost when the database fails: real worker processes, a real
PostgreSQL crashed, shut down or cutting connections, SQLite held past its
busy timeout, Redis killed.

Tests that stop the server run on PostgreSQL (`make test-postgres`), on the
session's own server, started again in each test's teardown; the others run
on either database.
"""

import os
import re
import signal
import sqlite3
import time
from collections import Counter
from contextlib import contextmanager

import psutil
import pytest
from django.db import DatabaseError, close_old_connections, connection, transaction
from django.tasks import TaskResultStatus

from tasks import registry
from tasks.models import TaskRecord
from tests import tasks
from tests.conftest import ON_POSTGRES
from tests.support import wait_finished, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]
postgres_only = pytest.mark.skipif(
    not ON_POSTGRES, reason="stops the PostgreSQL server (make test-postgres)"
)
sqlite_only = pytest.mark.skipif(ON_POSTGRES, reason="runs on the SQLite lane")

# Attempts that can be in flight at once, and so run twice at most.
PROCESSES, SLOTS, CELERY_SLOTS = 2, 4, 2
IN_FLIGHT = PROCESSES * SLOTS + CELERY_SLOTS


@pytest.fixture
def stack(worker, celery_worker, reconciler):
    """Channels workers (2 processes of 4 slots), a Celery worker (2 pool
    processes) and a reconciler: as `make run` and production run them."""
    return {
        "runworker": worker("default", processes=PROCESSES, concurrency=SLOTS),
        "celery": celery_worker(concurrency=CELERY_SLOTS),
        "reconciler": reconciler(),
    }


@pytest.mark.parametrize(
    ("halt", "down_for"), [("crash", 5.0), ("shut_down", 30.0)], ids=["crash", "30s"]
)
@postgres_only
def test_postgres_halted_mid_run_loses_no_outcome(
    postgres, stack, tmp_path, halt, down_for
):
    # Given tasks on both lanes running on every slot
    done = str(tmp_path / "done")
    results = _enqueue_both_lanes(done, channels=240, celery=60)
    children = _worker_children(stack["runworker"])
    wait_for(lambda: len(tasks.runs(done)) >= 40, message="tasks to be running")
    # When PostgreSQL stops (as a crash would, or a fast shutdown) and comes
    # back after a while
    getattr(postgres, halt)()
    down_since = time.monotonic()
    wait_for(
        lambda: _warned_pids(stack["runworker"]) >= set(children),
        timeout=30,
        message="each worker process to log the outage",
    )
    time.sleep(max(0.0, down_since + down_for - time.monotonic()))  # the outage
    postgres.start_again()
    # Then every task ends SUCCESSFUL, each ran, and only an attempt in flight
    # at the stop can have run twice
    _wait_all_finished(results, timeout=120)
    _assert_all_ran(results, done)
    # And every process lived through it, each logging the outage once
    _assert_alive(stack, children)
    for name in ("runworker", "celery"):
        _assert_logged_once_per_process(stack[name])


@postgres_only
def test_connections_cut_by_the_server_mid_run_lose_nothing(postgres, stack, tmp_path):
    # Given tasks on both lanes running on every slot
    done = str(tmp_path / "done")
    results = _enqueue_both_lanes(done, channels=160, celery=40, seconds=0.1)
    children = _worker_children(stack["runworker"])
    # When the server ends every other session three times while they run
    for round_ in range(1, 4):
        wait_for(
            lambda round_=round_: len(tasks.runs(done)) >= 40 * round_,
            timeout=60,
            message=f"tasks to run before cut {round_}",
        )
        wait_for(_terminate_other_backends, message=f"sessions to cut ({round_})")
    # Then all end SUCCESSFUL, none lost, every process alive
    _wait_all_finished(results, timeout=120)
    _assert_all_ran(results, done)
    _assert_alive(stack, children)


def test_an_outcome_refused_by_a_held_lock_lands_afterwards(worker, tmp_path):
    # Given a worker whose statements wait 1 s for a lock (SQLite's busy
    # timeout, PostgreSQL's lock_timeout), beating rarely (so that only the
    # outcome's write meets the lock), running a slow task
    done, started = str(tmp_path / "done"), str(tmp_path / "started")
    process = worker("default", DJANGO_DB_LOCK_TIMEOUT=1, TASKS_HEARTBEAT_SECONDS=60)
    result = tasks.slow_record_run.enqueue(done, "k", 2.0, started)
    wait_for(lambda: _first_beat_written(result.id), message="the attempt's first beat")
    # When another connection holds the lock past that timeout as it finishes
    with _holding_write_lock(result.id):
        wait_for(
            lambda: "Database unavailable" in process.output(),
            message="the outcome's write to time out",
        )
        assert len(tasks.runs(done)) == 1  # the task had returned
    # Then the kept outcome lands once the lock is free, and nothing ran twice
    wait_finished(result)
    assert result.status == TaskResultStatus.SUCCESSFUL
    assert result.attempts == 1
    assert len(tasks.runs(done)) == len(tasks.runs(started)) == 1
    wait_for(
        lambda: "Database available again" in process.output(),
        message="the worker to log the end of the outage",
    )
    assert process.alive()


def test_a_running_record_no_slot_holds_is_handed_back_though_its_worker_lives(
    worker, reconciler
):
    # Given a live worker, and a record RUNNING in its name that none of its
    # slots holds (its outcome lost in a crash, say)
    process = worker("default")
    live = wait_for(registry.alive, message="the worker to announce itself")
    result = tasks.add.enqueue(2, 3)
    wait_finished(result)
    TaskRecord.objects.filter(pk=result.id).update(
        status=TaskResultStatus.RUNNING,
        claimed_by=next(iter(live)),
        worker_ids=[],  # (those of finished attempts only)
        heartbeat_at=TaskRecord.objects.get(pk=result.id).finished_at,
        finished_at=None,
    )
    # When the reconciler sweeps
    reconciler()
    # Then the record is handed back once its heartbeat is stale, and run again
    wait_finished(result)
    assert result.status == TaskResultStatus.SUCCESSFUL
    assert result.attempts == 2
    assert "stopped heart-beating" in result.errors[-1].traceback
    assert process.alive()


@sqlite_only
def test_redis_killed_for_20s_loses_nothing_and_runs_nothing_twice(
    stack, redis_server, tmp_path
):
    done = str(tmp_path / "done")
    before = _enqueue_both_lanes(done, channels=30, celery=10, seconds=0.02)
    # When Redis is killed outright
    os.kill(redis_server.pid, signal.SIGKILL)
    redis_server.process.wait(10)
    killed_at = time.monotonic()
    # Then enqueueing still works (the record is written)...
    during = _enqueue_both_lanes(done, channels=30, celery=10, seconds=0.02, key="d")
    # ...and every Channels task runs while Redis is down (slots claim from
    # the database)
    channels = [r for r in before + during if r.backend == "default"]
    for result in channels:
        wait_finished(result, timeout=30)
    assert not redis_server.ping()
    time.sleep(max(0.0, killed_at + 20 - time.monotonic()))  # the outage
    redis_server.start()
    # And once it is back every Celery task runs too; none ran twice
    _wait_all_finished(before + during, timeout=120)
    _assert_all_ran(before + during, done, in_flight=0)
    _assert_alive(stack, _worker_children(stack["runworker"]))


# --- Helpers --------------------------------------------------------------------


def _enqueue_both_lanes(done, *, channels, celery, seconds=0.05, key="k"):
    """Tasks that sleep ``seconds`` and then mark ``done``, on both lanes."""
    results = [
        tasks.slow_record_run.enqueue(done, f"{key}c{i}", seconds)
        for i in range(channels)
    ]
    results += [
        tasks.g_slow_record_run.enqueue(done, f"{key}g{i}", seconds)
        for i in range(celery)
    ]
    return results


def _worker_children(supervisor) -> list[int]:
    return sorted(child.pid for child in psutil.Process(supervisor.pid).children())


def _statuses(ids) -> Counter | None:
    """Status counts of the records, or None while the database is down (this
    process' connection is dropped, to reconnect next time)."""
    try:
        rows = TaskRecord.objects.filter(pk__in=ids).values_list("status", flat=True)
        return Counter(rows)
    except DatabaseError:
        close_old_connections()
        connection.close()
        return None


def _wait_all_finished(results, timeout: float) -> None:
    ids = [result.id for result in results]
    seen = Counter()

    def finished():
        counts = _statuses(ids)
        if counts is not None:
            seen.clear()
            seen.update(counts)
        return seen[TaskResultStatus.SUCCESSFUL] == len(ids)

    try:
        wait_for(finished, timeout=timeout, message=f"all {len(ids)} tasks to succeed")
    except AssertionError as error:
        others = TaskRecord.objects.filter(pk__in=ids).exclude(
            status=TaskResultStatus.SUCCESSFUL
        )
        error.add_note(f"Last seen: {dict(seen)}; not successful: {list(others)[:5]}")
        raise


def _assert_all_ran(results, done: str, in_flight: int = IN_FLIGHT) -> None:
    """Each task's side effect happened, and only ``in_flight`` extra ones."""
    runs = Counter(line.split()[0] for line in tasks.runs(done))
    keys = [result.args[1] for result in results]
    assert set(runs) == set(keys)
    twice = sum(runs[key] - 1 for key in keys)
    assert twice <= in_flight, f"{twice} task(s) ran twice"


def _assert_alive(stack, children: list[int]) -> None:
    for name, process in stack.items():
        assert process.alive(), f"{name} died:\n{process.output()[-3000:]}"
    assert _worker_children(stack["runworker"]) == children  # none restarted


_WARNING = re.compile(r"WARNING\b.*Database unavailable in process (\d+)")
_BACK = re.compile(r"INFO\b.*Database available again in process (\d+)")


def _warned_pids(process) -> set[int]:
    return {int(pid) for pid in _WARNING.findall(process.output())}


def _assert_logged_once_per_process(process) -> None:
    """One WARNING when the outage started and one INFO when it ended, per
    process that met it (not one per retry, slot or second)."""
    wait_for(
        lambda: (
            Counter(_BACK.findall(process.output()))
            == Counter(_WARNING.findall(process.output()))
        ),
        timeout=30,
        message=f"{process.name} to log the end of the outage",
    )
    warnings = Counter(_WARNING.findall(process.output()))
    assert warnings and set(warnings.values()) == {1}, process.output()[-5000:]
    assert "Traceback" not in process.output()


def _terminate_other_backends() -> int:
    """End every other session of the database; how many there were (none
    for a moment after a cut, while pools reconnect)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        return cursor.fetchone()[0]


def _first_beat_written(record_id: str) -> bool:
    record = TaskRecord.objects.filter(pk=record_id).first()
    return (
        record is not None
        and record.status == TaskResultStatus.RUNNING
        and record.heartbeat_at > record.last_attempted_at
    )


@contextmanager
def _holding_write_lock(record_id: str):
    """Another connection holds what the record's outcome write needs: the
    row's lock on PostgreSQL, the database's write lock on SQLite."""
    if connection.vendor == "postgresql":
        with transaction.atomic():
            TaskRecord.objects.select_for_update().get(pk=record_id)
            yield
        return
    other = sqlite3.connect(connection.settings_dict["NAME"], isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        yield
        other.execute("ROLLBACK")
    finally:
        other.close()
