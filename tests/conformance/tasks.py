"""Task functions of the conformance suite: what Django's tests/tasks/tasks.py
defines, written for our backends (importable by worker processes)."""

import pickle
import sys

from django.tasks import TaskContext, task


@task()
def noop_task(*args, **kwargs) -> None:
    return None


@task
def noop_task_from_bare_decorator(*args, **kwargs) -> None:
    return None


@task()
async def noop_task_async(*args, **kwargs) -> None:
    return None


@task()
def calculate_meaning_of_life() -> int:
    return 42


@task()
def failing_task_value_error() -> None:
    raise ValueError("This task failed due to ValueError")


@task()
def failing_task_system_exit() -> None:
    raise SystemExit("This task failed due to SystemExit")


@task()
def failing_task_keyboard_interrupt() -> None:
    raise KeyboardInterrupt("This task failed due to KeyboardInterrupt")


@task()
def complex_exception() -> None:
    raise ValueError(ValueError("This task failed"))


@task()
def complex_return_value() -> object:
    return {"not": {"json": object()}}


@task()
def exit_task() -> None:
    exit(1)  # the builtin, as a script would call it


@task()
def sys_exit_task() -> None:
    sys.exit("stopped with sys.exit()")


@task(takes_context=True)
def get_task_id(context) -> str:
    return context.task_result.id


@task(takes_context=True)
def test_context(context, attempt) -> None:
    if not isinstance(context, TaskContext):
        raise TypeError(f"context is a {type(context).__name__}")
    if context.attempt != attempt:
        raise ValueError(f"attempt {context.attempt}, expected {attempt}")


@task(takes_context=True)
def pickle_round_trip(context) -> list[bool]:
    """In the worker: do the running Task and TaskResult survive pickling?"""
    result = context.task_result
    return [
        pickle.loads(pickle.dumps(result.task)) == result.task,
        pickle.loads(pickle.dumps(result)) == result,
    ]
