"""Unique jobs: while a unique task's record is READY or RUNNING, enqueueing an
equal call returns it; the database's constraint decides, across processes."""

import json
import subprocess

import pytest
from django.db import IntegrityError, transaction
from django.tasks import TaskResultStatus

from tasks import lifecycle
from tasks.exceptions import EqualJobActive
from tasks.models import TaskRecord
from tests import tasks
from tests.support import ROOT, VENV_BIN, wait_finished, wait_for

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("redis_server"),
]

Status = TaskResultStatus
LANES = pytest.mark.parametrize(
    "task", [tasks.unique_add, tasks.g_unique_add], ids=["channels", "celery"]
)


@LANES
def test_an_equal_call_returns_the_waiting_job(task):
    first = task.enqueue(1, 2)
    # Positional or keyword, defaults filled in: the same call
    assert task.enqueue(1, b=2).id == first.id
    assert task.enqueue(a=1, b=2).id == first.id
    # Other arguments are another job
    other = task.enqueue(1, 3)
    assert other.id != first.id
    assert task.enqueue(1).id not in (first.id, other.id)  # b=0
    assert TaskRecord.objects.filter(task_path=task.module_path).count() == 3


def test_a_running_job_is_joined_and_a_finished_one_is_not():
    first = tasks.unique_add.enqueue(5, 5)
    record = lifecycle.claim(first.id, "host:1:test")
    assert record is not None
    joined = tasks.unique_add.enqueue(5, 5)
    assert (joined.id, joined.status) == (first.id, Status.RUNNING)
    assert lifecycle.succeed(record, 10)
    again = tasks.unique_add.enqueue(5, 5)
    assert again.id != first.id
    assert again.status == Status.READY


def test_unique_key_decides_what_is_equal():
    first = tasks.unique_per_name.enqueue("report", "draft")
    assert tasks.unique_per_name.enqueue("report", "final").id == first.id
    assert tasks.unique_per_name.enqueue("invoice", "draft").id != first.id


def test_inside_a_transaction_the_equal_job_is_the_one_just_written():
    with transaction.atomic():
        first = tasks.unique_add.enqueue(7, 7)
        assert tasks.unique_add.enqueue(7, 7).id == first.id
    assert TaskRecord.objects.filter(pk=first.id).exists()


def test_the_database_refuses_a_second_active_record_whatever_the_code():
    first = tasks.unique_add.enqueue(8, 8)
    key = TaskRecord.objects.get(pk=first.id).unique_key
    twin = TaskRecord(task_path=tasks.unique_add.module_path, unique_key=key)
    with pytest.raises(IntegrityError), transaction.atomic():
        twin.save()


def test_retrying_a_failed_job_while_an_equal_one_waits_is_refused():
    failed = tasks.unique_add.enqueue(9, 9)
    record = lifecycle.claim(failed.id, "host:1:test")
    assert lifecycle.fail(record, ValueError("boom")) == Status.FAILED
    waiting = tasks.unique_add.enqueue(9, 9)
    assert waiting.id != failed.id
    record = TaskRecord.objects.get(pk=failed.id)
    with pytest.raises(EqualJobActive, match=f"an equal job \\({waiting.id}\\)"):
        lifecycle.retry(record)
    assert TaskRecord.objects.get(pk=failed.id).status == Status.FAILED
    # Once the equal job has finished, the retry goes through
    TaskRecord.objects.filter(pk=waiting.id).update(status=Status.SUCCESSFUL)
    assert lifecycle.retry(record) is True


RACE = """
import json, os, sys, time
from pathlib import Path
import django
django.setup()
from tests import tasks
tasks.unique_add.get_backend()  # connections and imports made before the start
ready, go = Path(sys.argv[1]), Path(sys.argv[2])
ready.touch()
deadline = time.monotonic() + 60
while not go.exists() and time.monotonic() < deadline:
    pass  # spin: both leave at the same instant
print(json.dumps([tasks.unique_add.enqueue(40, 2).id for _ in range(100)]))
"""


def test_two_processes_racing_to_enqueue_100_times_make_one_job(process_env, tmp_path):
    # Given two processes, each about to enqueue the same unique call 100
    # times, held at a start line until both are ready
    go = tmp_path / "go"
    ready = [tmp_path / f"ready-{n}" for n in range(2)]
    racers = [
        subprocess.Popen(
            [str(VENV_BIN / "python"), "-c", RACE, str(flag), str(go)],
            cwd=ROOT,
            env=process_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for flag in ready
    ]
    wait_for(lambda: all(flag.exists() for flag in ready), timeout=60)
    # When they start at once
    go.touch()
    outputs = [racer.communicate(timeout=120) for racer in racers]
    for racer, (_out, err) in zip(racers, outputs, strict=True):
        assert racer.returncode == 0, err
    ids = [json.loads(out.strip().splitlines()[-1]) for out, _err in outputs]
    # Then every one of the 200 enqueues returned the one record there is
    assert len(ids[0]) == len(ids[1]) == 100
    assert set(ids[0]) | set(ids[1]) == {ids[0][0]}
    assert (
        TaskRecord.objects.filter(task_path=tasks.unique_add.module_path).count() == 1
    )


def test_the_same_call_on_another_lane_is_another_job():
    channels = tasks.unique_add.enqueue(6, 6)
    celery = tasks.g_unique_add.enqueue(6, 6)
    assert channels.id != celery.id
    assert tasks.g_unique_add.get_result(celery.id).backend == "guaranteed"


def test_the_equal_job_reads_as_its_own_task():
    first = tasks.unique_add.using(priority=5).enqueue(3, 3)
    joined = tasks.unique_add.enqueue(3, 3)
    assert joined.id == first.id
    assert joined.task.priority == 5


@LANES
def test_a_unique_job_runs_once_for_many_equal_enqueues(task, worker, celery_worker):
    start = worker if task is tasks.unique_add else celery_worker
    results = [task.enqueue(20, 22) for _ in range(5)]
    start()
    assert len({result.id for result in results}) == 1
    assert wait_finished(results[0]).return_value == 42
