"""The task record's hand-built statements store and read what the ORM would."""

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.tasks import TaskResultStatus
from django.utils import timezone

from tasks import lifecycle, record_sql
from tasks.models import TaskRecord

pytestmark = pytest.mark.django_db

Status = TaskResultStatus


def _fields(record: TaskRecord) -> dict:
    return {f.attname: getattr(record, f.attname) for f in TaskRecord._meta.fields}


@pytest.fixture
def owner():
    return get_user_model().objects.create_user("ada", password="x" * 12)


NOW = timezone.now()


def _record(owner, **overrides) -> TaskRecord:
    values = {
        "task_path": "tests.tasks.add",
        "backend": "default",
        "queue_name": "default",
        "priority": 3,
        "args": [1, "two", {"three": [3.5, None, True]}],
        "kwargs": {"name": "Zoë", "nested": {"list": [1, 2]}},
        "max_attempts": 4,
        "enqueued_at": NOW,
        "available_at": NOW,
        "sent_at": NOW,
        "owner": owner,
    }
    values.update(overrides)
    return TaskRecord(**values)


def test_insert_stores_the_same_row_as_save(owner):
    inserted, saved = _record(owner), _record(owner)
    record_sql.insert(inserted)
    saved.save()

    rows = {
        row.pop("id"): row
        for row in TaskRecord.objects.values(
            *[f.attname for f in TaskRecord._meta.fields]
        )
    }
    assert rows[inserted.pk] == rows[saved.pk]
    assert rows[inserted.pk]["kwargs"] == {"name": "Zoë", "nested": {"list": [1, 2]}}
    assert not inserted._state.adding
    assert inserted._state.db == "default"


def test_claim_returns_the_row_as_the_orm_reads_it(owner):
    record = _record(owner, errors=[{"exception_class_path": "x.Y", "traceback": "t"}])
    record_sql.insert(record)

    claimed = lifecycle.claim(record.pk, "host:1:abc")

    assert claimed is not None
    assert _fields(claimed) == _fields(TaskRecord.objects.get(pk=record.pk))
    assert claimed.status == Status.RUNNING
    assert claimed.attempts == 1
    assert claimed.claimed_by == "host:1:abc"
    assert claimed.started_at.tzinfo is not None
    assert claimed.args == [1, "two", {"three": [3.5, None, True]}]
    assert claimed.owner == record.owner
    assert lifecycle.claim(record.pk, "host:2:def") is None


def test_claim_refuses_a_record_not_yet_due(owner):
    later = timezone.now() + timedelta(minutes=5)
    record = _record(owner, run_after=later, available_at=later, sent_at=None)
    record_sql.insert(record)

    assert lifecycle.claim(record.pk, "host:1:abc") is None
    assert TaskRecord.objects.get(pk=record.pk).status == Status.READY


def test_outcome_is_saved_only_while_the_attempt_owns_the_record():
    record_sql.insert(_record(None))
    claimed = lifecycle.claim(TaskRecord.objects.get().pk, "host:1:abc")

    assert lifecycle.succeed(claimed, {"sum": 3})
    stored = TaskRecord.objects.get(pk=claimed.pk)
    assert stored.status == Status.SUCCESSFUL
    assert stored.return_value == {"sum": 3}
    assert stored.worker_ids == ["host:1:abc"]
    assert stored.finished_at == claimed.finished_at

    # A stale attempt (the reconciler gave the record to another worker).
    TaskRecord.objects.filter(pk=claimed.pk).update(status=Status.RUNNING, attempts=2)
    assert lifecycle.fail(claimed, ValueError("late")) is None
    stored.refresh_from_db()
    assert stored.errors == []
    assert stored.attempts == 2


def _waiting(key: str, **overrides) -> TaskRecord:
    record = _record(None, kwargs={"key": key}, **overrides)
    record_sql.insert(record)
    return record


def _claim_all(targets) -> list[str]:
    keys = []
    while (record := lifecycle.claim_next(targets, "host:1:abc")) is not None:
        keys.append(record.kwargs["key"])
    return keys


def test_claim_next_takes_the_most_urgent_due_record_of_its_queue():
    # Given waiting records of several priorities and ages, and some the
    # worker must not take: another queue, another backend, not yet due
    start = timezone.now() - timedelta(minutes=10)
    _waiting("old-low", priority=-5, available_at=start)
    _waiting("new-high", priority=5, available_at=start + timedelta(minutes=1))
    _waiting("old-high", priority=5, available_at=start)
    _waiting("middle", priority=0, available_at=start + timedelta(minutes=2))
    _waiting("other-queue", priority=100, queue_name="thumbnailer")
    _waiting("other-backend", priority=100, backend="guaranteed")
    _waiting("not-due", priority=100, available_at=timezone.now() + timedelta(hours=1))
    # When a worker of the default queue claims until nothing is left
    keys = _claim_all((("default", "default"),))
    # Then it took the highest priority first, the longest waiting among equals
    assert keys == ["old-high", "new-high", "middle", "old-low"]
    assert TaskRecord.objects.ready().count() == 3


def test_claim_next_over_several_queues_takes_the_most_urgent_of_all():
    start = timezone.now() - timedelta(minutes=10)
    _waiting("default-low", priority=0, available_at=start)
    _waiting("thumb-high", priority=50, queue_name="thumbnailer")
    _waiting("default-high", priority=50, available_at=start)
    _waiting("thumb-low", priority=-1, queue_name="thumbnailer", available_at=start)

    keys = _claim_all((("default", "default"), ("default", "thumbnailer")))

    assert keys == ["default-high", "thumb-high", "default-low", "thumb-low"]


def test_claim_next_reads_the_partial_index_of_waiting_records():
    from django.db import connection

    sql = record_sql._claim_next_sql(TaskRecord, connection.vendor, "default", 1)
    pick = sql[sql.index("(SELECT") + 1 : sql.rindex(")")]
    now = connection.ops.adapt_datetimefield_value(timezone.now())
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SET enable_seqscan = off")  # a near-empty table
            cursor.execute(f"EXPLAIN {pick}", ["default", "default", now])
            plan = " ".join(row[0] for row in cursor.fetchall())
            assert "Sort" not in plan  # the index gives the order
        else:
            cursor.execute(f"EXPLAIN QUERY PLAN {pick}", ["default", "default", now])
            plan = " ".join(str(row[-1]) for row in cursor.fetchall())
            # The index gives the order: no sort (the full keys' GROUP BY, over
            # the few RUNNING rows, may use one)
            assert "TEMP B-TREE FOR ORDER BY" not in plan
    assert "task_ready_claim" in plan
