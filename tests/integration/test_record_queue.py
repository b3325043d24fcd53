"""The record is the queue: workers claim from the database, in priority
order, under a supervisor that hands back the work of dead processes and
stops runaway or cancelled tasks. No reconciler runs in these tests unless
one says so: the workers must manage alone."""

import os
import signal
from itertools import pairwise

import pytest
from django.tasks import TaskResultStatus

from project.settings import channel_layers_for
from tasks import lifecycle, transport
from tasks.models import TaskRecord
from tests import tasks
from tests.support import process_ended, wait_finished, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

Status = TaskResultStatus


def _short_lived_channel(settings, redis_server, **config) -> dict[str, str]:
    """Give this process' channel layer ``config``; env for workers alike."""
    layers = channel_layers_for(redis_server.url)
    layers["default"]["CONFIG"].update(config)
    settings.CHANNEL_LAYERS = layers
    return {f"CHANNEL_{name.upper()}": str(value) for name, value in config.items()}


def test_a_backlog_outliving_the_channels_expiry_drains_with_no_idle_worker(
    worker, settings, redis_server
):
    # Given wake-ups that expire after 2 s, and 3 s of queued work
    env = _short_lived_channel(settings, redis_server, expiry=2)
    results = [
        tasks.slow_record_run.enqueue("/dev/null", str(n), 0.15) for n in range(20)
    ]
    worker("default", **env)
    # When the channel's messages have expired with work still waiting
    wait_for(
        lambda: (
            transport.depths(["default"]) == {"default": 0}
            and TaskRecord.objects.ready().exists()
        ),
        timeout=10,
        message="the wake-ups to expire while records wait",
    )
    # Then every task still runs, one right after the other
    for result in results:
        wait_finished(result)
    assert {r.status for r in results} == {Status.SUCCESSFUL}
    runs = sorted((r.started_at, r.finished_at) for r in results)
    gaps = [later[0] - earlier[1] for earlier, later in pairwise(runs)]
    assert max(gap.total_seconds() for gap in gaps) < 0.5


def test_a_full_channel_drains_without_the_reconciler(worker, settings, redis_server):
    # Given a channel that holds only 5 wake-ups
    env = _short_lived_channel(settings, redis_server, capacity=5)
    results = [tasks.add.enqueue(n, n) for n in range(30)]
    assert TaskRecord.objects.filter(sent_at__isnull=True).count() == 25
    # When a worker starts
    worker("default", **env)
    # Then every record is claimed and run
    assert [wait_finished(r).return_value for r in results] == [
        2 * n for n in range(30)
    ]


PRIORITIES = [0, 50, -100, 100, 50, -50]
# Highest first; equal priorities in the order they were enqueued.
BY_PRIORITY = ["3:100", "1:50", "4:50", "0:0", "5:-50", "2:-100"]


def test_higher_priorities_run_first(worker, tmp_path):
    # Given tasks of several priorities waiting before any worker runs
    marker = str(tmp_path / "runs")
    results = [
        tasks.record_run.using(priority=p).enqueue(marker, f"{n}:{p}")
        for n, p in enumerate(PRIORITIES)
    ]
    # When one worker with one slot runs them
    worker("default")
    for result in results:
        wait_finished(result)
    # Then they ran by priority, oldest first among equals
    assert [line.split()[0] for line in tasks.runs(marker)] == BY_PRIORITY


def test_higher_priorities_run_first_on_celery(celery_worker, tmp_path):
    marker = str(tmp_path / "runs")
    priorities = [0, 100, -100, 50, -50]
    results = [
        tasks.g_record_run.using(priority=p).enqueue(marker, str(p)) for p in priorities
    ]
    celery_worker()
    for result in results:
        wait_finished(result, timeout=60)
    assert [line.split()[0] for line in tasks.runs(marker)] == [
        "100",
        "50",
        "0",
        "-50",
        "-100",
    ]


def test_killing_one_of_two_worker_processes_hands_its_task_back_at_once(
    worker, tmp_path
):
    # Given two worker processes, each in the middle of a task
    done, started = str(tmp_path / "done"), str(tmp_path / "started")
    supervisor = worker("default", processes=2)
    results = [
        tasks.slow_record_run.enqueue(done, key, 2.0, started) for key in ("a", "b")
    ]
    wait_for(lambda: len(tasks.runs(started)) == 2, message="both tasks to start")
    pids = {key: int(pid) for key, pid in map(str.split, tasks.runs(started))}
    assert pids["a"] != pids["b"]
    # When one process is killed outright (no reconciler runs)
    os.kill(pids["a"], signal.SIGKILL)
    # Then its task is handed back at once and completes in a new process
    killed, other = (wait_finished(r, timeout=30) for r in results)
    assert killed.status == Status.SUCCESSFUL
    assert killed.attempts == 2
    assert "was killed by SIGKILL" in killed.errors[0].traceback
    # And the other process' task was untouched
    assert other.status == Status.SUCCESSFUL
    assert other.attempts == 1
    assert sorted(line.split()[0] for line in tasks.runs(done)) == ["a", "b"]
    assert supervisor.alive()
    wait_for(
        lambda: supervisor.output().count("listening on") == 3,
        message="a new worker process",
    )


def test_a_sync_task_over_its_time_limit_is_stopped_and_the_worker_goes_on(
    worker, tmp_path
):
    started = str(tmp_path / "started")
    supervisor = worker("default")
    result = wait_finished(tasks.overrun.enqueue(started, 60))

    assert result.status == Status.FAILED
    assert result.errors[-1].exception_class_path == (
        "tasks.exceptions.TimeLimitExceeded"
    )
    assert "time limit of 1 s" in result.errors[-1].traceback
    # The process that ran it was ended (it records the failure, then exits),
    # and a new one serves
    pid = int(tasks.runs(started)[0])
    wait_for(lambda: process_ended(pid), timeout=5, message="the overrun's process")
    assert wait_finished(tasks.add.enqueue(1, 1)).return_value == 2
    assert supervisor.alive()


def test_a_coroutine_over_its_time_limit_is_cancelled_in_its_process(worker, tmp_path):
    started = str(tmp_path / "started")
    worker("default")
    result = wait_finished(tasks.aoverrun.enqueue(started, 60))

    assert result.status == Status.FAILED
    assert result.errors[-1].exception_class_path == (
        "tasks.exceptions.TimeLimitExceeded"
    )
    # Cancelled on its loop: the same process goes on
    after = wait_finished(tasks.add.enqueue(1, 1))
    assert after.worker_ids == result.worker_ids


def test_a_timed_out_task_is_retried_when_retry_on_names_the_time_limit(
    worker, tmp_path
):
    worker("default")
    result = wait_finished(tasks.overrun_once.enqueue(str(tmp_path / "runs")))

    assert result.status == Status.SUCCESSFUL
    assert result.return_value == 2
    assert [e.exception_class_path for e in result.errors] == [
        "tasks.exceptions.TimeLimitExceeded"
    ]


def test_a_celery_task_over_its_time_limit_fails_with_time_limit_exceeded(
    celery_worker, tmp_path
):
    celery_worker()
    result = wait_finished(tasks.g_overrun.enqueue(str(tmp_path / "s"), 60), 60)

    assert result.status == Status.FAILED
    assert result.errors[-1].exception_class_path == (
        "tasks.exceptions.TimeLimitExceeded"
    )


def test_cancelling_a_running_sync_task_ends_its_process(worker, tmp_path):
    done, started = str(tmp_path / "done"), str(tmp_path / "started")
    worker("default")
    result = tasks.slow_record_run.enqueue(done, "k", 30.0, started)
    wait_for(lambda: tasks.runs(started), message="the task to start")
    pid = int(tasks.runs(started)[0].split()[1])
    # When it is cancelled while it runs
    assert lifecycle.cancel(TaskRecord.objects.get(pk=result.id))
    # Then within 2 s the process running it has ended
    wait_for(lambda: process_ended(pid), timeout=2, message="the stop")
    # And the task is FAILED with TaskCancelled, never retried
    result.refresh()
    assert result.status == Status.FAILED
    assert result.attempts == 1
    assert result.errors[-1].exception_class_path == "tasks.exceptions.TaskCancelled"
    assert wait_finished(tasks.add.enqueue(2, 2)).return_value == 4
    assert tasks.runs(done) == []


def test_cancelling_a_running_coroutine_cancels_it_on_its_loop(worker, tmp_path):
    done, started = str(tmp_path / "done"), str(tmp_path / "started")
    worker("default")  # one slot: nothing else runs until the coroutine stops
    result = tasks.aslow_record_run.enqueue(done, "k", 30.0, started)
    wait_for(lambda: tasks.runs(started), message="the task to start")
    # When it is cancelled while it runs
    assert lifecycle.cancel(TaskRecord.objects.get(pk=result.id))
    # Then within 2 s the slot is free again, in the same process
    after = tasks.add.enqueue(2, 2)
    wait_for(
        lambda: TaskRecord.objects.filter(pk=after.id, status=Status.SUCCESSFUL),
        timeout=2,
        message="the slot to be free",
    )
    after.refresh()
    result.refresh()
    assert after.worker_ids == result.worker_ids
    assert result.status == Status.FAILED
    assert result.errors[-1].exception_class_path == "tasks.exceptions.TaskCancelled"
    assert tasks.runs(done) == []


def test_cancelling_a_running_celery_task_terminates_it(celery_worker, tmp_path):
    done, started = str(tmp_path / "done"), str(tmp_path / "started")
    celery = celery_worker()
    result = tasks.g_slow_record_run.enqueue(done, "k", 30.0, started)
    wait_for(lambda: tasks.runs(started), timeout=60, message="the task to start")
    child = int(tasks.runs(started)[0].split()[1])

    assert lifecycle.cancel(TaskRecord.objects.get(pk=result.id))

    wait_for(lambda: process_ended(child), timeout=2, message="the stop")
    result.refresh()
    assert result.status == Status.FAILED
    assert result.errors[-1].exception_class_path == "tasks.exceptions.TaskCancelled"
    assert wait_finished(tasks.g_add.enqueue(2, 2), timeout=60).return_value == 4
    assert tasks.runs(done) == []
    assert celery.alive()


def test_four_processes_claiming_at_once_never_run_a_record_twice(worker, tmp_path):
    # Given two "hosts" of two worker processes each
    marker = str(tmp_path / "runs")
    worker("default", processes=2, name="host-a")
    worker("default", processes=2, name="host-b")
    # When 1,000 tasks are enqueued while they all claim
    results = [tasks.record_run.enqueue(marker, str(n)) for n in range(1000)]
    wait_for(
        lambda: TaskRecord.objects.successful().count() == 1000,
        timeout=120,
        message="1,000 tasks to run",
    )
    # Then each ran exactly once, and every process took part
    keys = [line.split()[0] for line in tasks.runs(marker)]
    assert sorted(keys, key=int) == [str(n) for n in range(1000)]
    assert len({line.split()[1] for line in tasks.runs(marker)}) == 4
    assert {r.id for r in results} == set(
        TaskRecord.objects.values_list("pk", flat=True)
    )
