"""CeleryBackend end to end: the same records, delivered by real Celery workers."""

import signal

import psutil
import pytest
from django.tasks import TaskResultStatus

from tests import tasks
from tests.support import wait_finished, wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def test_enqueue_runs_on_celery_and_returns_its_value(celery_worker):
    celery_worker()
    result = wait_finished(tasks.g_add.enqueue(40, 2), timeout=60)
    assert result.status == TaskResultStatus.SUCCESSFUL
    assert result.return_value == 42
    assert result.backend == "guaranteed"
    assert result.worker_ids[0].startswith("celery@")


def test_the_worker_keeps_its_database_connection_across_tasks(celery_worker):
    # Given a Celery worker (one pool process) that has run a task
    celery_worker()
    first = wait_finished(tasks.g_connection_in_use.enqueue(), timeout=60)
    # When it runs more
    later = [
        wait_finished(tasks.g_connection_in_use.enqueue(), timeout=60) for _ in range(3)
    ]
    # Then they ran in the same process on the connection it had opened
    # (Celery's fixup would open a new one for every task)
    assert [r.return_value for r in later] == [first.return_value] * 3


def test_exception_marks_failed_with_traceback(celery_worker):
    celery_worker()
    result = wait_finished(tasks.g_explode.enqueue("kaput"), timeout=60)
    assert result.status == TaskResultStatus.FAILED
    assert "ValueError: kaput" in result.errors[-1].traceback
    assert result.attempts == 1  # ValueError is not in retry_on: no retry


def test_retry_with_backoff_succeeds_on_the_third_attempt(celery_worker, tmp_path):
    # Given a task that fails twice with a retryable error
    celery_worker()
    marks = str(tmp_path / "runs")
    # When it runs
    result = wait_finished(tasks.g_flaky.enqueue(marks, 2), timeout=60)
    # Then the third attempt succeeds, each failure recorded
    assert result.status == TaskResultStatus.SUCCESSFUL
    assert result.return_value == 3
    assert result.attempts == 3
    assert [e.exception_class_path for e in result.errors] == [
        "builtins.ConnectionError"
    ] * 2
    # And the attempts were spaced by the backoff (base 0.2 s, jitter >= half)
    times = [float(t) for t in tasks.runs(marks)]
    assert times[1] - times[0] >= 0.1
    assert times[2] - times[1] >= 0.2


def test_retries_run_out_into_failed(celery_worker, tmp_path):
    celery_worker()
    result = wait_finished(tasks.g_flaky.enqueue(str(tmp_path / "r"), 5), timeout=60)
    assert result.status == TaskResultStatus.FAILED
    assert result.attempts == 3
    assert "flaky failure 3" in result.errors[-1].traceback


@pytest.mark.slow
def test_worker_killed_outright_mid_task_is_redelivered(
    celery_worker, reconciler, tmp_path
):
    # Given a Celery worker in the middle of a task
    done, started = str(tmp_path / "done"), str(tmp_path / "started")
    first = celery_worker()
    result = tasks.g_slow_record_run.enqueue(done, "k", 2.0, started)
    wait_for(lambda: tasks.runs(started), timeout=60, message="the task to start")
    # When the whole worker (main process and pool) is SIGKILLed
    for child in psutil.Process(first.pid).children(recursive=True):
        child.kill()
    first.signal(signal.SIGKILL)
    # Then, without waiting for the broker's visibility timeout, another worker runs it
    celery_worker(name="celery-2")
    reconciler()
    wait_finished(result, timeout=60)
    assert result.status == TaskResultStatus.SUCCESSFUL
    assert [line.split()[0] for line in tasks.runs(done)] == ["k"]


@pytest.mark.slow
def test_pool_child_killed_mid_task_is_requeued(celery_worker, reconciler, tmp_path):
    # Given a task running in a prefork pool child
    done, started = str(tmp_path / "done"), str(tmp_path / "started")
    worker = celery_worker()
    result = tasks.g_slow_record_run.enqueue(done, "k", 2.0, started)
    wait_for(lambda: tasks.runs(started), timeout=60, message="the task to start")
    child_pid = int(tasks.runs(started)[0].split()[1])
    # When that child dies (Celery requeues the message: reject_on_worker_lost;
    # the reconciler sees the record's heartbeat stop and releases it)
    psutil.Process(child_pid).kill()
    reconciler()
    # Then the record runs again in a new pool child and completes
    wait_finished(result, timeout=60)
    assert result.status == TaskResultStatus.SUCCESSFUL
    assert result.attempts == 2
    assert [line.split()[0] for line in tasks.runs(done)] == ["k"]
    assert worker.alive()


def test_a_task_leaving_the_interpreter_fails_and_the_pool_child_goes_on(
    celery_worker,
):
    # Given a Celery worker with one pool process
    celery_worker()
    # When tasks exit the interpreter, each its own way
    leaving = [tasks.g_leave.enqueue(how) for how in tasks.EXITS]
    # Then each fails once with its own exception (never WorkerLost, no retry)
    for how, result in zip(tasks.EXITS, leaving, strict=True):
        wait_finished(result, timeout=60)
        assert result.status == TaskResultStatus.FAILED
        assert [e.exception_class_path for e in result.errors] == [tasks.EXITS[how]]
    # And all ran in the same pool process, which still serves
    after = wait_finished(tasks.g_add.enqueue(1, 1), timeout=60)
    assert {r.worker_ids[0] for r in [*leaving, after]} == set(after.worker_ids)
