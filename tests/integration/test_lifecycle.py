"""A record's transitions, run in this process: the signals they send, and
only for writes that took effect."""

import logging

import pytest
from django.tasks import TaskResultStatus, task_backends
from django.tasks.signals import task_finished, task_started

from tasks import events, execution, lifecycle
from tasks.exceptions import TaskCancelled
from tasks.models import TaskRecord
from tasks.monitor import Monitor
from tasks.signals import task_retrying
from tests import tasks
from tests.support import wait_for

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("redis_server"),
]

Status = TaskResultStatus


@pytest.fixture
def signals():
    """(signal name, sender, status) of every lifecycle signal sent here."""
    sent = []
    receivers = []
    for name, signal in (
        ("started", task_started),
        ("retrying", task_retrying),
        ("finished", task_finished),
    ):

        def receiver(sender, task_result, name=name, **kwargs):
            sent.append((name, sender, task_result.status))

        signal.connect(receiver, weak=False)
        receivers.append((signal, receiver))
    yield sent
    for signal, receiver in receivers:
        signal.disconnect(receiver)


def run_once(record_id: str):
    """Claim (once due) and run one attempt, as a worker slot does."""
    record = wait_for(
        lambda: lifecycle.claim(record_id, "host:1:test"),
        timeout=5,
        message=f"task {record_id} to be due",
    )
    return execution.run_sync(record)


@pytest.mark.parametrize(
    "task", [tasks.flaky, tasks.g_flaky], ids=["channels", "celery"]
)
def test_signals_come_from_the_backend_class_and_finished_only_once(
    task, signals, tmp_path
):
    # Given a task that fails once with a retryable error, then succeeds
    result = task.enqueue(str(tmp_path / "runs"), 1)
    backend = type(task_backends[task.backend])
    # When both attempts run
    assert run_once(result.id) == Status.READY
    assert run_once(result.id) == Status.SUCCESSFUL
    # Then every signal has the backend's class as sender, and the retried
    # attempt sent task_retrying, not task_finished
    assert signals == [
        ("started", backend, Status.RUNNING),
        ("retrying", backend, Status.READY),
        ("started", backend, Status.RUNNING),
        ("finished", backend, Status.SUCCESSFUL),
    ]


def test_a_failed_task_is_logged_with_its_exception(caplog):
    result = tasks.explode.enqueue("kaboom")
    with caplog.at_level(logging.INFO, logger="django.tasks"):
        assert run_once(result.id) == Status.FAILED
    (failed,) = [r for r in caplog.records if "state=FAILED" in r.getMessage()]
    assert failed.levelno == logging.ERROR
    assert failed.exc_info[0] is ValueError
    assert "kaboom" in str(failed.exc_info[1])


def test_a_retried_attempt_is_logged_with_its_exception(caplog, tmp_path):
    result = tasks.flaky.enqueue(str(tmp_path / "runs"), 1)
    with caplog.at_level(logging.INFO, logger="django.tasks"):
        assert run_once(result.id) == Status.READY
    (retrying,) = [r for r in caplog.records if "retrying at" in r.getMessage()]
    assert retrying.levelno == logging.WARNING
    assert retrying.exc_info[0] is ConnectionError


def test_an_attempt_that_lost_its_record_writes_and_signals_nothing(signals):
    # Given a running attempt, cancelled meanwhile
    result = tasks.add.enqueue(1, 2)
    record = lifecycle.claim(result.id, "host:1:test")
    assert lifecycle.cancel(TaskRecord.objects.get(pk=result.id))
    # When the attempt finishes anyway
    assert execution.run_sync(record) is None
    # Then the record stays cancelled, and no second finish was signalled
    result.refresh()
    assert result.status == Status.FAILED
    assert result.errors[-1].exception_class is TaskCancelled
    assert [name for name, *_ in signals] == ["started", "finished"]


def test_the_monitor_leaves_an_attempt_that_finished_while_it_looked(
    monkeypatch, caplog
):
    # Given a running attempt the monitor watches, and a monitor that, the
    # moment it reads who owns what, finds the attempt has just finished
    # (the slot wrote its outcome between the monitor's two steps)
    ended = []
    monitor = Monitor(end_process=ended.append)

    def finishing_first(read_owners):
        def read(records):
            watching.__exit__(None, None, None)
            execution.finish(record, None, None)
            return read_owners(records)

        return read

    record = lifecycle.claim(tasks.noop.enqueue().id, "host:1:test")
    watching = monitor.watching(record)
    watching.__enter__()
    for read in ("heartbeat", "still_owned"):  # the monitor's two reads
        monkeypatch.setattr(lifecycle, read, finishing_first(getattr(lifecycle, read)))
    # When the monitor checks
    with caplog.at_level(logging.WARNING, logger="tasks.monitor"):
        monitor.check()
    # Then the attempt is not taken for one whose record was taken away
    assert ended == []
    assert [r.message for r in caplog.records if r.name == "tasks.monitor"] == []
    assert TaskRecord.objects.get(pk=record.pk).status == Status.SUCCESSFUL


def test_every_status_or_progress_write_bumps_the_stored_sequence():
    result = tasks.with_progress.enqueue(3)

    def stored() -> int:
        return TaskRecord.objects.get(pk=result.id).sequence

    assert stored() == 0
    record = lifecycle.claim(result.id, "host:1:test")
    assert (record.sequence, stored()) == (1, 1)
    assert lifecycle.set_progress(record, 0.5, "half")
    assert (record.sequence, stored()) == (2, 2)
    assert lifecycle.cancel(record)
    assert (record.sequence, stored()) == (3, 3)
    assert lifecycle.retry(record)
    assert (record.sequence, stored()) == (4, 4)
    # A write that did not take effect (a lost attempt) bumps nothing
    assert not lifecycle.set_progress(record, 0.9, "late")
    assert stored() == 4
    record = lifecycle.claim(result.id, "host:1:test")
    assert lifecycle.succeed(record, 3)
    assert (record.sequence, stored()) == (6, 6)
    assert events.task_update(record)["seq"] == 6
