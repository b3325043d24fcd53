"""What Django 6.1's tests/tasks/test_dummy_backend.py pins about an enqueued,
not yet run task, on both lanes.

Django's dummy backend never runs a task; here a task that must stay READY
goes to the ``parked`` queue, which no worker serves.
"""

import logging

import pytest
from asgiref.sync import sync_to_async
from django.db import transaction
from django.tasks import TaskResultStatus, task_backends
from django.tasks.exceptions import TaskResultDoesNotExist

from tasks.models import TaskRecord
from tests.conformance import tasks as test_tasks
from tests.conformance.conftest import raises_message
from tests.support import await_finished, wait_finished

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.shared_workers]


def assert_waiting(result, task, args, kwargs) -> None:
    assert result.status == TaskResultStatus.READY
    assert result.started_at is None
    assert result.finished_at is None
    with raises_message(ValueError, "Task has not finished yet"):
        result.return_value  # noqa: B018
    assert result.task == task
    assert result.args == args
    assert result.kwargs == kwargs
    assert task.get_result(result.id) == result  # as Django's "in results"


def test_using_correct_backend(lane):
    assert isinstance(task_backends[lane.alias], lane.backend_class)
    assert lane.on(test_tasks.noop_task).get_backend() is task_backends[lane.alias]


def test_enqueue_task(lane):
    for defined in (test_tasks.noop_task, test_tasks.noop_task_async):
        task = lane.parked(defined)
        result = task.enqueue(1, two=3)
        assert_waiting(result, task, [1], {"two": 3})


async def test_enqueue_task_async(lane):
    for defined in (test_tasks.noop_task, test_tasks.noop_task_async):
        task = lane.parked(defined)
        result = await task.aenqueue()
        await sync_to_async(assert_waiting)(result, task, [], {})


def test_get_result(lane):
    backend = task_backends[lane.alias]
    result = backend.enqueue(lane.parked(test_tasks.noop_task), (), {})
    assert backend.get_result(result.id) == result


async def test_get_result_async(lane):
    backend = task_backends[lane.alias]
    result = await backend.aenqueue(lane.parked(test_tasks.noop_task), (), {})
    assert await backend.aget_result(result.id) == result


def test_refresh_result(lane):
    # Django changes the stored result by hand; here the worker does it.
    result = lane.on(test_tasks.calculate_meaning_of_life).enqueue()
    assert result.status == TaskResultStatus.READY
    wait_finished(result)  # refreshes until finished
    assert result.status == TaskResultStatus.SUCCESSFUL
    assert result.return_value == 42


async def test_refresh_result_async(lane):
    result = await lane.on(test_tasks.calculate_meaning_of_life).aenqueue()
    assert result.status == TaskResultStatus.READY
    await await_finished(result)
    await result.arefresh()
    assert result.status == TaskResultStatus.SUCCESSFUL


async def test_get_missing_result(lane):
    backend = task_backends[lane.alias]
    with pytest.raises(TaskResultDoesNotExist):
        await sync_to_async(backend.get_result)("123")
    with pytest.raises(TaskResultDoesNotExist):
        await backend.aget_result("123")


def test_enqueue_logs(lane, caplog):
    with caplog.at_level(logging.DEBUG, logger="django.tasks"):
        result = lane.parked(test_tasks.noop_task).enqueue()
    lines = [r.getMessage() for r in caplog.records if result.id in r.getMessage()]
    assert len(lines) == 1
    assert "enqueued" in lines[0]


def test_wait_until_transaction_commit(lane):
    # A rolled-back enqueue leaves nothing; a committed one runs after commit.
    with pytest.raises(RuntimeError), transaction.atomic():
        lane.on(test_tasks.noop_task).enqueue()
        assert TaskRecord.objects.count() == 1
        raise RuntimeError("roll back")
    assert not TaskRecord.objects.exists()

    with transaction.atomic():
        result = lane.on(test_tasks.noop_task).enqueue()
        assert TaskRecord.objects.get(pk=result.id).status == TaskResultStatus.READY
    assert wait_finished(result).status == TaskResultStatus.SUCCESSFUL
