"""What Django 6.1's tests/tasks/test_immediate_backend.py pins about running
a task, on both lanes with real workers.

Django's immediate backend runs a task inside ``enqueue``; here a worker runs
it and the test waits for the result. Log lines are the worker's own.
"""

import logging
from datetime import timedelta

import pytest
import redis
from django.conf import settings
from django.db import transaction
from django.tasks import TaskResultStatus, task_backends
from django.tasks.exceptions import InvalidTask
from django.utils import timezone

from tasks import transport
from tasks.models import TaskRecord
from tests.conformance import tasks as test_tasks
from tests.conformance.conftest import raises_message
from tests.support import await_finished, wait_finished

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.shared_workers]


def assert_ran(result, task) -> None:
    assert result.is_finished is True
    assert result.started_at is not None
    assert result.last_attempted_at is not None
    assert result.finished_at is not None
    assert result.started_at >= result.enqueued_at
    assert result.finished_at >= result.started_at
    assert result.task == task


def test_enqueue_task(lane):
    for defined in (test_tasks.noop_task, test_tasks.noop_task_async):
        noop = lane.on(defined)
        result = wait_finished(noop.enqueue(1, two=3))

        assert result.status == TaskResultStatus.SUCCESSFUL
        assert_ran(result, noop)
        assert result.return_value is None
        assert result.args == [1]
        assert result.kwargs == {"two": 3}
        assert result.attempts == 1


async def test_enqueue_task_async(lane):
    for defined in (test_tasks.noop_task, test_tasks.noop_task_async):
        noop = lane.on(defined)
        result = await await_finished(await noop.aenqueue())

        assert result.status == TaskResultStatus.SUCCESSFUL
        assert_ran(result, noop)
        assert result.return_value is None
        assert result.args == []
        assert result.kwargs == {}
        assert result.attempts == 1


@pytest.mark.parametrize(
    ("failing", "exception", "message"),
    [
        (
            test_tasks.failing_task_value_error,
            ValueError,
            "This task failed due to ValueError",
        ),
        (
            test_tasks.failing_task_system_exit,
            SystemExit,
            "This task failed due to SystemExit",
        ),
    ],
)
def test_catches_exception(lane, failing, exception, message):
    task = lane.on(failing)
    result = wait_finished(task.enqueue())

    assert result.status == TaskResultStatus.FAILED
    with raises_message(ValueError, "Task failed"):
        result.return_value  # noqa: B018
    assert_ran(result, task)
    assert result.errors[0].exception_class is exception
    traceback = result.errors[0].traceback
    assert traceback.endswith(f"{exception.__name__}: {message}\n"), traceback
    assert result.args == []
    assert result.kwargs == {}
    # One ERROR line, with the exception (the worker logs it, with the traceback)
    failed = lane.wait_logged(result.id, "state=FAILED")
    assert len(failed) == 1
    assert "ERROR" in failed[0]
    assert f"{exception.__name__}: {message}" in _after(lane, failed[0])
    # And the worker goes on
    assert lane.process.alive()
    assert wait_finished(lane.on(test_tasks.calculate_meaning_of_life).enqueue())


def test_throws_keyboard_interrupt(lane):
    # Changed: Django's immediate backend lets KeyboardInterrupt through to the
    # caller of enqueue(). In a worker it can only come from the task's own
    # code, and must not stop the worker: the attempt fails with it.
    result = wait_finished(
        lane.on(test_tasks.failing_task_keyboard_interrupt).enqueue()
    )

    assert result.status == TaskResultStatus.FAILED
    assert result.errors[0].exception_class is KeyboardInterrupt
    assert result.errors[0].traceback.endswith(
        "KeyboardInterrupt: This task failed due to KeyboardInterrupt\n"
    )
    assert lane.process.alive()
    assert wait_finished(lane.on(test_tasks.noop_task).enqueue()).status == (
        TaskResultStatus.SUCCESSFUL
    )


def test_complex_exception(lane):
    task = lane.on(test_tasks.complex_exception)
    result = wait_finished(task.enqueue())

    assert result.status == TaskResultStatus.FAILED
    with raises_message(ValueError, "Task failed"):
        result.return_value  # noqa: B018
    assert_ran(result, task)
    assert result._return_value is None
    assert result.errors[0].exception_class is ValueError
    assert 'ValueError(ValueError("This task failed"))' in result.errors[0].traceback
    assert result.args == []
    assert result.kwargs == {}


def test_complex_return_value(lane):
    task = lane.on(test_tasks.complex_return_value)
    result = wait_finished(task.enqueue())

    assert result.status == TaskResultStatus.FAILED
    assert_ran(result, task)
    assert result._return_value is None
    assert result.errors[0].exception_class is TypeError
    assert "Unsupported type" in result.errors[0].traceback


def test_result(lane):
    backend = task_backends[lane.alias]
    result = backend.enqueue(lane.on(test_tasks.calculate_meaning_of_life), [], {})
    wait_finished(result)

    assert result.status == TaskResultStatus.SUCCESSFUL
    assert result.return_value == 42


async def test_result_async(lane):
    backend = task_backends[lane.alias]
    task = lane.on(test_tasks.calculate_meaning_of_life)
    result = await await_finished(await backend.aenqueue(task, [], {}))

    assert result.status == TaskResultStatus.SUCCESSFUL
    assert result.return_value == 42


@pytest.mark.skip(reason="Not applicable: our backends store results.")
def test_cannot_get_result():
    """Django's immediate backend keeps no results (supports_get_result False)."""


@pytest.mark.skip(reason="Not applicable: our backends store results.")
def test_cannot_refresh_result():
    """Django's immediate backend keeps no results (supports_get_result False)."""


def test_cannot_pass_run_after(lane):
    # Changed: both lanes support run_after (supports_defer), so the task is
    # accepted, and it does not start before its time.
    later = timezone.now() + timedelta(seconds=1)
    task = lane.on(test_tasks.calculate_meaning_of_life).using(run_after=later)
    task_backends[lane.alias].validate_task(task)
    result = wait_finished(task.enqueue())
    assert result.status == TaskResultStatus.SUCCESSFUL
    assert result.started_at >= later


def test_enqueue_logs(lane, caplog):
    with caplog.at_level(logging.DEBUG, logger="django.tasks"):
        result = lane.on(test_tasks.noop_task).enqueue()
    enqueued = [r.getMessage() for r in caplog.records if result.id in r.getMessage()]
    assert len(enqueued) == 1
    assert "enqueued" in enqueued[0]

    lane.wait_logged(result.id, "state=SUCCESSFUL")
    lines = lane.log_lines(result.id)
    assert len(lines) == 2, lines
    assert "state=RUNNING" in lines[0]
    assert "state=SUCCESSFUL" in lines[1]


def test_failed_logs(lane):
    result = lane.on(test_tasks.failing_task_value_error).enqueue()

    lane.wait_logged(result.id, "state=FAILED")
    lines = lane.log_lines(result.id)
    assert len(lines) == 2, lines
    assert "state=RUNNING" in lines[0]
    assert "state=FAILED" in lines[1]
    # Ours: the failure's line comes with its traceback
    logged = _after(lane, lines[1])
    assert "Traceback (most recent call last)" in logged
    assert "ValueError: This task failed due to ValueError" in logged


def test_successful_task_no_none_type_in_logs(lane):
    result = wait_finished(lane.on(test_tasks.noop_task).enqueue())
    assert result.status == TaskResultStatus.SUCCESSFUL
    lane.wait_logged(result.id, "state=SUCCESSFUL")
    for line in lane.log_lines(result.id):
        assert "NoneType" not in line


def test_takes_context(lane):
    result = wait_finished(lane.on(test_tasks.get_task_id).enqueue())
    assert result.return_value == result.id


def test_context(lane):
    result = wait_finished(lane.on(test_tasks.test_context).enqueue(1))
    assert result.status == TaskResultStatus.SUCCESSFUL, result.errors


def test_validate_on_enqueue(lane, settings):
    task = lane.on(test_tasks.noop_task).using(queue_name="parked")
    one_queue = {**settings.TASKS[lane.alias], "QUEUES": ["queue-1"]}
    settings.TASKS = {**settings.TASKS, lane.alias: one_queue}
    with raises_message(InvalidTask, "Queue 'parked' is not valid for backend"):
        task.enqueue()
    assert not TaskRecord.objects.exists()


async def test_validate_on_aenqueue(lane, settings):
    task = lane.on(test_tasks.noop_task).using(queue_name="parked")
    one_queue = {**settings.TASKS[lane.alias], "QUEUES": ["queue-1"]}
    settings.TASKS = {**settings.TASKS, lane.alias: one_queue}
    with raises_message(InvalidTask, "Queue 'parked' is not valid for backend"):
        await task.aenqueue()


def test_doesnt_wait_until_transaction_commit_by_default(lane):
    # Changed: ours waits. The record is written in the caller's transaction
    # and delivered when it commits (rolled back, nothing exists or runs).
    before = _waiting_messages(lane, "parked")
    with transaction.atomic():
        result = lane.parked(test_tasks.noop_task).enqueue()
        assert result.enqueued_at is not None
        assert result.status == TaskResultStatus.READY
        assert _waiting_messages(lane, "parked") == before
    assert _waiting_messages(lane, "parked") == before + 1
    # And a task on a served queue runs once committed.
    with transaction.atomic():
        result = lane.on(test_tasks.noop_task).enqueue()
    assert wait_finished(result).status == TaskResultStatus.SUCCESSFUL


def _after(lane, line: str) -> str:
    """The worker's log from ``line`` on (a logged traceback follows its line)."""
    output = lane.process.output()
    return output[output.index(line) :]


def _waiting_messages(lane, queue: str) -> int:
    """Messages waiting on ``queue`` of the lane's transport."""
    if lane.name == "channels":
        return transport.depths([queue])[queue]
    # Celery's Redis transport keeps one list per priority step.
    keys = [queue, *(f"{queue}\x06\x16{step}" for step in range(1, 10))]
    client = redis.Redis.from_url(settings.REDIS_URL)
    return sum(client.llen(key) for key in keys)
