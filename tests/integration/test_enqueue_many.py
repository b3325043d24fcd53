"""tasks.enqueue_many: every record in one statement, wake-ups in one round
trip at commit, on both lanes."""

import pytest
from django.conf import settings
from django.db import connection, transaction
from django.tasks import TaskResultStatus
from django.test.utils import CaptureQueriesContext

import tasks as job_system
from tasks import transport
from tasks.models import TaskRecord
from tests import tasks
from tests.support import wait_finished, wait_for

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("redis_server"),
]

Status = TaskResultStatus


def inserts(queries) -> list[str]:
    return [q["sql"] for q in queries if q["sql"].startswith("INSERT INTO")]


def test_two_thousand_records_are_one_statement_and_read_back_as_enqueued():
    calls = [((n, n), {}) for n in range(2000)]
    with CaptureQueriesContext(connection) as queries:
        results = job_system.enqueue_many(tasks.add, calls)
    assert len(inserts(queries.captured_queries)) == 1
    assert [r.args for r in results] == [[n, n] for n in range(2000)]
    assert all(r.status == Status.READY for r in results)
    # Stored as the ORM would store them: each reads back equal
    for result in (results[0], results[1234], results[-1]):
        stored = tasks.add.get_result(result.id)
        assert (stored.args, stored.kwargs, stored.status) == (
            result.args,
            {},
            Status.READY,
        )
    record = TaskRecord.objects.get(pk=results[7].id)
    assert (record.queue_name, record.backend, record.max_attempts) == (
        "default",
        "default",
        3,
    )
    assert record.enqueued_at is not None and record.sent_at is not None


def test_inside_a_transaction_the_wake_ups_wait_for_the_commit():
    transport.send_many("default", [])  # (nothing to send is not an error)
    before = transport.depths(["default"])["default"]
    with transaction.atomic():
        job_system.enqueue_many(tasks.noop, [((), {})] * 5)
        assert transport.depths(["default"])["default"] == before
    assert transport.depths(["default"])["default"] == before + 5


def test_a_rolled_back_transaction_leaves_no_record_and_sends_nothing():
    before = transport.depths(["default"])["default"]
    with pytest.raises(RuntimeError), transaction.atomic():
        job_system.enqueue_many(tasks.noop, [((), {})] * 5)
        raise RuntimeError("rolled back")
    assert not TaskRecord.objects.exists()
    assert transport.depths(["default"])["default"] == before


def test_arguments_that_are_not_json_store_nothing():
    with pytest.raises(TypeError, match="must be JSON data"):
        job_system.enqueue_many(tasks.add, [((1, 2), {}), ((object(), 2), {})])
    assert not TaskRecord.objects.exists()


def test_unique_calls_share_one_job_within_the_batch_and_with_an_active_one():
    waiting = tasks.unique_add.enqueue(1, 1)
    results = job_system.enqueue_many(
        tasks.unique_add, [((1, 1), {}), ((2, 2), {}), ((2,), {"b": 2}), ((3, 3), {})]
    )
    assert results[0].id == waiting.id
    assert results[1].id == results[2].id
    assert len({r.id for r in results}) == 3
    assert TaskRecord.objects.count() == 3


@pytest.mark.parametrize(
    "task", [tasks.record_run, tasks.g_record_run], ids=["channels", "celery"]
)
def test_every_enqueued_task_runs_once_on_a_real_worker(
    task, worker, celery_worker, tmp_path
):
    path = str(tmp_path / "runs")
    if task is tasks.record_run:
        worker("default", concurrency=2)
    else:
        celery_worker(concurrency=2)
    results = job_system.enqueue_many(task, [((path, f"k{n}"), {}) for n in range(150)])
    for result in results:
        assert wait_finished(result).status == Status.SUCCESSFUL
    assert sorted(line.split()[0] for line in tasks.runs(path)) == sorted(
        f"k{n}" for n in range(150)
    )


def test_more_tasks_than_the_channel_holds_are_all_claimed(worker, tmp_path):
    # The channel's capacity bounds the wake-ups; a woken slot claims the rest.
    capacity = settings.CHANNEL_LAYERS["default"]["CONFIG"]["capacity"]
    path = str(tmp_path / "runs")
    job_system.enqueue_many(tasks.record_run, [((path, "x"), {})] * (capacity + 200))
    assert transport.depths(["default"])["default"] == capacity
    worker("default", concurrency=4)
    wait_for(
        lambda: len(tasks.runs(path)) == capacity + 200,
        timeout=90,
        message="every task to run",
    )


def test_one_call_is_one_record():
    (result,) = job_system.enqueue_many(tasks.add, [((1, 2), {})])
    assert tasks.add.get_result(result.id).args == [1, 2]


def test_values_that_are_equal_but_not_the_same_stay_as_given():
    results = job_system.enqueue_many(
        tasks.add, [((1, 2), {}), ((1.0, 2), {}), ((True, 2), {})]
    )
    stored = [TaskRecord.objects.get(pk=r.id).args[0] for r in results]
    assert [type(value) for value in stored] == [int, float, bool]
