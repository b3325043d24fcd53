"""Tasks and results pickle in every process of the project, although Daphne
brings in Twisted, whose twisted.persisted.styles replaces how Python pickles
methods (tasks.apps.restore_standard_pickling undoes it)."""

import importlib
import pickle
import subprocess
import sys

import pytest
from django.tasks import TaskResult, TaskResultStatus

from tasks.apps import restore_standard_pickling
from tests import tasks
from tests.support import ROOT

# What the daphne command does: import its server (and Twisted) first, then
# the project's ASGI application, which sets Django up.
AS_DAPHNE_STARTS = """
import pickle
import daphne.server
from project.asgi import application
from django.tasks import TaskResult, TaskResultStatus
from tests import tasks

result = TaskResult(
    task=tasks.add, id="1", status=TaskResultStatus.READY, enqueued_at=None,
    started_at=None, finished_at=None, last_attempted_at=None, args=[1, 2],
    kwargs={}, backend="default", errors=[], worker_ids=[],
)
print(pickle.loads(pickle.dumps(tasks.add)) == tasks.add,
      pickle.loads(pickle.dumps(result)) == result)
"""


def _result() -> TaskResult:
    return TaskResult(
        task=tasks.add,
        id="1",
        status=TaskResultStatus.READY,
        enqueued_at=None,
        started_at=None,
        finished_at=None,
        last_attempted_at=None,
        args=[1, 2],
        kwargs={},
        backend="default",
        errors=[],
        worker_ids=[],
    )


def test_twisted_pickling_breaks_tasks_and_restoring_mends_it():
    # Given Twisted's pickling overrides registered again
    styles = importlib.import_module("twisted.persisted.styles")
    importlib.reload(styles)
    try:
        # Then a Task cannot be unpickled
        with pytest.raises(AttributeError, match="_reconstruct"):
            pickle.loads(pickle.dumps(tasks.add))
    finally:
        # When they are undone, as every process does at startup
        restore_standard_pickling()
    # Then Tasks and TaskResults round-trip
    assert pickle.loads(pickle.dumps(tasks.add)) == tasks.add
    assert pickle.loads(pickle.dumps(_result())) == _result()


def test_this_process_has_twisted_and_pickles_tasks():
    assert "twisted.persisted.styles" in sys.modules  # daphne is installed
    assert pickle.loads(pickle.dumps(tasks.add)) == tasks.add
    assert pickle.loads(pickle.dumps(_result())) == _result()


def test_a_process_started_as_daphne_starts_pickles_tasks(process_env):
    run = subprocess.run(
        [sys.executable, "-c", AS_DAPHNE_STARTS],
        cwd=ROOT,
        env=process_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["True", "True"]
