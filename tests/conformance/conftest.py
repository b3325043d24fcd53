"""Both lanes, with real workers shared by the whole conformance suite.

Each test runs once per lane: ``channels`` (ChannelsBackend, a ``runworker``
with two slots) and ``celery`` (CeleryBackend, a prefork Celery worker). Both
serve the ``default`` queue only; the ``parked`` queue, added to both backends'
QUEUES here, is served by no one, so a task sent there stays READY.

The workers live as long as this package's tests (starting a Celery worker
per test would cost seconds each), so these modules are marked
``shared_workers``: Redis is not flushed between their tests (a flush would
also drop the Celery worker's queue bindings). A message left over from an
earlier test names a record that no longer exists, which a claim simply does
not find.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from django.tasks import task_backends

from tests.support import (
    ManagedProcess,
    celery_worker_argv,
    runworker_argv,
    wait_for,
)

PARKED = "parked"
LANES = {"channels": "default", "celery": "guaranteed"}


@dataclass
class Lane:
    """One backend and the worker process that serves it."""

    name: str
    alias: str
    process: ManagedProcess

    def on(self, task, **options):
        """``task`` on this lane's backend (with further ``using`` options)."""
        return task.using(backend=self.alias, **options)

    def parked(self, task):
        """``task`` on this lane's queue that no worker serves."""
        return task.using(backend=self.alias, queue_name=PARKED)

    @property
    def backend_class(self):
        return type(task_backends[self.alias])

    def log_lines(self, result_id: str) -> list[str]:
        """The worker's django.tasks lines about ``result_id``."""
        mark = f"Task id={result_id} "
        return [line for line in self.process.output().splitlines() if mark in line]

    def wait_logged(self, result_id: str, text: str) -> list[str]:
        """Wait until a log line names ``result_id`` and contains ``text``."""
        return wait_for(
            lambda: [line for line in self.log_lines(result_id) if text in line],
            timeout=30,
            message=f"the {self.name} worker to log {text!r} for {result_id}",
        )


@pytest.fixture(scope="package")
def lane_processes(process_env, process_logs) -> Iterator[dict[str, ManagedProcess]]:
    commands = {
        "channels": (runworker_argv(["default"], concurrency=2), "listening on"),
        "celery": (celery_worker_argv(concurrency=1), " ready."),
    }
    processes = {}
    try:
        for name, (argv, ready) in commands.items():
            process = ManagedProcess(
                f"conformance-{name}", argv, process_env, process_logs
            )
            processes[name] = process
            process.wait_ready(ready, timeout=60, message=f"the {name} worker")
        yield processes
    finally:
        for process in processes.values():
            process.stop()


@pytest.fixture(params=list(LANES))
def lane(request, lane_processes, settings) -> Lane:
    """Each lane in turn, with the ``parked`` queue on both backends."""
    tasks_setting = {alias: dict(config) for alias, config in settings.TASKS.items()}
    for config in tasks_setting.values():
        config["QUEUES"] = [*config["QUEUES"], PARKED]
    settings.TASKS = tasks_setting
    process = lane_processes[request.param]
    assert process.alive(), process.output()
    return Lane(request.param, LANES[request.param], process)


def raises_message(exception: type[BaseException], text: str):
    """pytest.raises matching ``text`` literally (Django's assertRaisesMessage)."""
    return pytest.raises(exception, match=re.escape(text))
