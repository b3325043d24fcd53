"""Nothing accepted is lost: killed workers, a restarted Redis, a full channel."""

import signal

import pytest
from django.tasks import TaskResultStatus

from project.settings import channel_layers_for
from tasks.models import TaskRecord
from tests import tasks
from tests.support import wait_finished, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def test_sigkill_mid_task_reruns_it_and_nothing_finished_runs_twice(
    worker, reconciler, tmp_path
):
    # Given a worker that has finished two tasks and is in the middle of a third
    done, started = str(tmp_path / "done"), str(tmp_path / "started")
    first = worker("default")
    finished = [tasks.record_run.enqueue(done, key) for key in ("a", "b")]
    for result in finished:
        wait_finished(result)
    slow = tasks.slow_record_run.enqueue(done, "slow", 3.0, started)
    wait_for(lambda: tasks.runs(started), message="the slow task to start")
    # When the worker is killed outright, and another worker and the reconciler run
    first.signal(signal.SIGKILL)
    worker("default", name="runworker-2")
    reconciler()
    # Then the interrupted task runs again and succeeds
    wait_finished(slow, timeout=60)
    assert slow.status == TaskResultStatus.SUCCESSFUL
    assert slow.attempts == 2
    assert "stopped heart-beating" in slow.errors[0].traceback
    # And no finished task ran a second time
    keys = [line.split()[0] for line in tasks.runs(done)]
    assert sorted(keys) == ["a", "b", "slow"]
    assert len(tasks.runs(started)) == 2


def test_sigterm_finishes_the_running_task_then_exits(worker, tmp_path):
    done, started = str(tmp_path / "done"), str(tmp_path / "started")
    process = worker("default")
    result = tasks.slow_record_run.enqueue(done, "k", 1.0, started)
    wait_for(lambda: tasks.runs(started), message="the task to start")
    process.signal(signal.SIGTERM)
    wait_for(lambda: not process.alive(), timeout=30, message="the worker to exit")
    assert process.popen.returncode == 0
    result.refresh()
    assert result.status == TaskResultStatus.SUCCESSFUL


def test_two_workers_on_one_queue_share_the_work(worker):
    worker("default")
    worker("default", name="runworker-2")
    results = [
        tasks.slow_record_run.enqueue("/dev/null", str(i), 0.1) for i in range(16)
    ]
    for result in results:
        wait_finished(result)
    workers = {result.worker_ids[0] for result in results}
    assert len(workers) == 2, workers


def test_redis_restart_with_queued_tasks_loses_none(worker, redis_server):
    # Given a worker, and 100 tasks queued behind slow ones
    process = worker("default")
    results = [
        tasks.slow_record_run.enqueue("/dev/null", str(i), 0.02) for i in range(100)
    ]
    # When Redis restarts while they are queued
    redis_server.stop()
    redis_server.start()
    # Then the worker reconnects (same process) and all 100 complete
    for result in results:
        wait_finished(result, timeout=90)
    assert all(r.status == TaskResultStatus.SUCCESSFUL for r in results)
    assert process.alive()


def test_channel_capacity_exceeded_loses_none(
    worker, reconciler, redis_server, settings
):
    # Given a channel that holds only 5 messages, and no worker yet
    layers = channel_layers_for(redis_server.url)
    layers["default"]["CONFIG"]["capacity"] = 5
    settings.CHANNEL_LAYERS = layers
    # When 30 tasks are enqueued: ChannelFull never reaches the caller
    results = [tasks.add.enqueue(i, i) for i in range(30)]
    unsent = TaskRecord.objects.filter(sent_at__isnull=True).count()
    assert unsent == 25
    # Then with a worker and the reconciler, all of them run
    worker("default")
    reconciler()
    for result in results:
        wait_finished(result, timeout=60)
    assert [r.return_value for r in results] == [2 * i for i in range(30)]
