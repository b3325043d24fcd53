"""What Django 6.1's tests/tasks/test_tasks.py pins, on both lanes.

Each test is named after the Django test it mirrors. Where Django's test runs
on its dummy or immediate backend, this one runs on a real worker and waits
for the result; the README's "Differences from Django's reference backends"
lists every test changed or skipped here, and why.
"""

import dataclasses
import pickle
from datetime import datetime

import pytest
from django.db import transaction
from django.tasks import (
    DEFAULT_TASK_QUEUE_NAME,
    Task,
    TaskResultStatus,
    default_task_backend,
    task,
    task_backends,
)
from django.tasks.base import TASK_MAX_PRIORITY, TASK_MIN_PRIORITY
from django.tasks.exceptions import (
    InvalidTask,
    InvalidTaskBackend,
    TaskResultDoesNotExist,
    TaskResultMismatch,
)
from django.utils import timezone
from django.utils.module_loading import import_string

from tasks.backends import ChannelsBackend
from tasks.base import JobTask
from tasks.models import TaskRecord
from tests.conformance import tasks as test_tasks
from tests.conformance.conftest import raises_message
from tests.support import await_finished, wait_finished

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.shared_workers]


def test_using_correct_backend(lane):
    assert default_task_backend == task_backends["default"]
    assert isinstance(task_backends["default"], ChannelsBackend)
    assert lane.on(test_tasks.noop_task).get_backend() is task_backends[lane.alias]


def test_task_decorator(lane):
    for defined in (
        test_tasks.noop_task,
        test_tasks.noop_task_async,
        test_tasks.noop_task_from_bare_decorator,
    ):
        assert isinstance(lane.on(defined), Task)
        assert isinstance(lane.on(defined), JobTask)


def test_enqueue_task(lane):
    result = lane.parked(test_tasks.noop_task).enqueue()

    assert result.status == TaskResultStatus.READY
    assert result.task == lane.parked(test_tasks.noop_task)
    assert result.args == []
    assert result.kwargs == {}
    assert result.task.get_result(result.id) == result


async def test_enqueue_task_async(lane):
    result = await lane.parked(test_tasks.noop_task).aenqueue()

    assert result.status == TaskResultStatus.READY
    assert result.task == lane.parked(test_tasks.noop_task)
    assert result.args == []
    assert result.kwargs == {}
    assert await result.task.aget_result(result.id) == result


def test_enqueue_with_invalid_argument(lane):
    with raises_message(TypeError, "Unsupported type"):
        lane.on(test_tasks.noop_task).enqueue(datetime.now())
    assert not TaskRecord.objects.exists()  # nothing stored half-way


async def test_aenqueue_with_invalid_argument(lane):
    with raises_message(TypeError, "Unsupported type"):
        await lane.on(test_tasks.noop_task).aenqueue(datetime.now())


def test_using_priority(lane):
    noop = lane.on(test_tasks.noop_task)
    assert noop.priority == 0
    assert noop.using(priority=1).priority == 1
    assert noop.priority == 0


def test_using_queue_name(lane):
    noop = lane.on(test_tasks.noop_task)
    assert noop.queue_name == DEFAULT_TASK_QUEUE_NAME
    assert noop.using(queue_name="parked").queue_name == "parked"
    assert noop.queue_name == DEFAULT_TASK_QUEUE_NAME


def test_using_run_after(lane):
    now = timezone.now()
    noop = lane.on(test_tasks.noop_task)
    assert noop.run_after is None
    assert noop.using(run_after=now).run_after == now
    assert noop.run_after is None


def test_using_unknown_backend(lane):
    assert test_tasks.noop_task.backend == "default"
    with raises_message(InvalidTaskBackend, "The connection 'unknown' doesn't"):
        test_tasks.noop_task.using(backend="unknown")


def test_using_missing_backend(lane, settings):
    settings.TASKS = {**settings.TASKS, "missing": {"BACKEND": "does.not.exist"}}
    with raises_message(
        InvalidTaskBackend,
        "Could not find backend 'does.not.exist': No module named 'does'",
    ):
        test_tasks.noop_task.using(backend="missing")


def test_using_creates_new_instance(lane):
    noop = lane.on(test_tasks.noop_task)
    new_task = noop.using()
    assert new_task == noop
    assert new_task is not noop


def test_chained_using(lane):
    now = timezone.now()
    run_after_task = lane.on(test_tasks.noop_task).using(run_after=now)
    assert run_after_task.run_after == now

    priority_task = run_after_task.using(priority=10)
    assert priority_task.priority == 10
    assert priority_task.run_after == now
    assert run_after_task.priority == 0


async def test_refresh_result(lane):
    result = await lane.on(test_tasks.noop_task).aenqueue()
    await await_finished(result)
    original_result = dataclasses.asdict(result)

    await result.arefresh()
    assert dataclasses.asdict(result) == original_result

    from asgiref.sync import sync_to_async

    await sync_to_async(result.refresh)()
    assert dataclasses.asdict(result) == original_result


def test_naive_datetime(lane):
    with raises_message(InvalidTask, "run_after must be an aware datetime."):
        lane.on(test_tasks.noop_task).using(run_after=datetime.now())


def test_invalid_priority(lane):
    noop = lane.on(test_tasks.noop_task)
    message = (
        f"priority must be a whole number between {TASK_MIN_PRIORITY} and "
        f"{TASK_MAX_PRIORITY}."
    )
    for priority in (-101, 101, 3.1):
        with raises_message(InvalidTask, message):
            noop.using(priority=priority)
    for priority in (100, -100, 0):
        assert noop.using(priority=priority).priority == priority


def test_unknown_queue_name(lane, settings):
    with raises_message(InvalidTask, "Queue 'queue-2' is not valid for backend."):
        lane.on(test_tasks.noop_task).using(queue_name="queue-2")
    # Validation is bypassed when the backend's QUEUES is an empty list.
    any_queue = {**settings.TASKS[lane.alias], "QUEUES": []}
    settings.TASKS = {**settings.TASKS, lane.alias: any_queue}
    anywhere = lane.on(test_tasks.noop_task).using(queue_name="queue-2")
    assert anywhere.queue_name == "queue-2"


def test_call_task(lane):
    assert lane.on(test_tasks.calculate_meaning_of_life).call() == 42


async def test_call_task_async(lane):
    assert await lane.on(test_tasks.calculate_meaning_of_life).acall() == 42


async def test_call_async_task(lane):
    assert await lane.on(test_tasks.noop_task_async).acall() is None


def test_call_async_task_sync(lane):
    assert lane.on(test_tasks.noop_task_async).call() is None


def test_get_result(lane):
    backend = task_backends[lane.alias]
    # Inside a transaction the record is not delivered yet, so the worker
    # cannot have changed it between the two reads.
    with transaction.atomic():
        result = backend.enqueue(lane.on(test_tasks.noop_task), (), {})
        new_result = lane.on(test_tasks.noop_task).get_result(result.id)
    assert result == new_result
    # And once the worker has run it, a fresh read equals the refreshed one.
    wait_finished(result)
    assert lane.on(test_tasks.noop_task).get_result(result.id) == result


async def test_get_result_async(lane):
    backend = task_backends[lane.alias]
    result = await backend.aenqueue(lane.parked(test_tasks.noop_task), (), {})
    new_result = await lane.on(test_tasks.noop_task).aget_result(result.id)
    assert result == new_result


async def test_get_missing_result(lane):
    noop = lane.on(test_tasks.noop_task)
    from asgiref.sync import sync_to_async

    with pytest.raises(TaskResultDoesNotExist):
        await sync_to_async(noop.get_result)("123")
    with pytest.raises(TaskResultDoesNotExist):
        await noop.aget_result("123")


def test_get_incorrect_result(lane):
    backend = task_backends[lane.alias]
    result = backend.enqueue(lane.parked(test_tasks.noop_task_async), (), {})
    with raises_message(TaskResultMismatch, "Task does not match"):
        lane.on(test_tasks.noop_task).get_result(result.id)


async def test_get_incorrect_result_async(lane):
    backend = task_backends[lane.alias]
    result = await backend.aenqueue(lane.parked(test_tasks.noop_task_async), (), {})
    with raises_message(TaskResultMismatch, "Task does not match"):
        await lane.on(test_tasks.noop_task).aget_result(result.id)


def test_invalid_function(lane):
    def nested() -> None: ...

    for invalid_function in (any, nested):
        with raises_message(
            InvalidTask, "Task function must be defined at a module level."
        ):
            task(backend=lane.alias)(invalid_function)


def test_get_backend(lane):
    assert test_tasks.noop_task.backend == "default"
    assert isinstance(test_tasks.noop_task.get_backend(), ChannelsBackend)
    on_lane = lane.on(test_tasks.noop_task)
    assert on_lane.backend == lane.alias
    assert isinstance(on_lane.get_backend(), lane.backend_class)


def test_name(lane):
    assert lane.on(test_tasks.noop_task).name == "noop_task"
    assert lane.on(test_tasks.noop_task_async).name == "noop_task_async"


def test_module_path(lane):
    base = "tests.conformance.tasks"
    assert lane.on(test_tasks.noop_task).module_path == f"{base}.noop_task"
    assert lane.on(test_tasks.noop_task_async).module_path == f"{base}.noop_task_async"
    assert import_string(test_tasks.noop_task.module_path) is test_tasks.noop_task


def test_pickle_task(lane):
    noop = lane.on(test_tasks.noop_task)
    assert pickle.loads(pickle.dumps(noop)) == noop


def test_unpickle_arbitrary_string(lane):
    kwargs = {"func": "does.not.exist.fake_task"}
    with raises_message(ValueError, "Expected 'does.not.exist.fake_task' to"):
        JobTask._reconstruct(kwargs)


def test_unpickle_non_task_object(lane):
    kwargs = {"func": "builtins.any"}
    with raises_message(ValueError, "Expected 'builtins.any' to point to a Task"):
        JobTask._reconstruct(kwargs)


def test_pickle_task_result(lane):
    result = wait_finished(lane.on(test_tasks.noop_task).enqueue())
    assert pickle.loads(pickle.dumps(result)) == result
    # And in the worker process, which pickles its own running task and result.
    in_worker = wait_finished(lane.on(test_tasks.pickle_round_trip).enqueue())
    assert in_worker.status == TaskResultStatus.SUCCESSFUL, in_worker.errors
    assert in_worker.return_value == [True, True]


def test_no_backends(lane, settings):
    noop = lane.on(test_tasks.noop_task)
    settings.TASKS = {}
    with pytest.raises(InvalidTaskBackend):
        noop.enqueue()


def test_task_error_invalid_exception(lane):
    result = wait_finished(lane.on(test_tasks.failing_task_value_error).enqueue())
    assert len(result.errors) == 1

    object.__setattr__(result.errors[0], "exception_class_path", "subprocess.run")
    with raises_message(ValueError, "'subprocess.run' does not reference a"):
        result.errors[0].exception_class  # noqa: B018


def test_task_error_unknown_module(lane):
    result = wait_finished(lane.on(test_tasks.failing_task_value_error).enqueue())
    assert len(result.errors) == 1

    object.__setattr__(result.errors[0], "exception_class_path", "does.not.exist")
    with pytest.raises(ImportError):
        result.errors[0].exception_class  # noqa: B018


def test_takes_context_without_taking_context(lane):
    with raises_message(
        InvalidTask,
        "Task takes context but does not have a first argument of 'context'.",
    ):
        task(takes_context=True, backend=lane.alias)(
            test_tasks.calculate_meaning_of_life.func
        )


def test_run_after_in_decorator(lane):
    with raises_message(TypeError, "run_after cannot be defined statically"):
        task(run_after=timezone.now(), backend=lane.alias)(
            test_tasks.calculate_meaning_of_life.func
        )
