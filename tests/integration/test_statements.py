"""The task record's hand-built statements store and read what the ORM would."""

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.tasks import TaskResultStatus
from django.utils import timezone

from tasks import statements
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
        "sent_at": NOW,
        "owner": owner,
    }
    values.update(overrides)
    return TaskRecord(**values)


def test_insert_stores_the_same_row_as_save(owner):
    inserted, saved = _record(owner), _record(owner)
    statements.insert(inserted)
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
    statements.insert(record)

    claimed = TaskRecord.claim(record.pk, "host:1:abc")

    assert claimed is not None
    assert _fields(claimed) == _fields(TaskRecord.objects.get(pk=record.pk))
    assert claimed.status == Status.RUNNING
    assert claimed.attempts == 1
    assert claimed.claimed_by == "host:1:abc"
    assert claimed.started_at.tzinfo is not None
    assert claimed.args == [1, "two", {"three": [3.5, None, True]}]
    assert claimed.owner == record.owner
    assert TaskRecord.claim(record.pk, "host:2:def") is None


def test_claim_refuses_a_record_not_yet_due(owner):
    record = _record(
        owner, run_after=timezone.now() + timedelta(minutes=5), sent_at=None
    )
    statements.insert(record)

    assert TaskRecord.claim(record.pk, "host:1:abc") is None
    assert TaskRecord.objects.get(pk=record.pk).status == Status.READY


def test_outcome_is_saved_only_while_the_attempt_owns_the_record():
    statements.insert(_record(None))
    claimed = TaskRecord.claim(TaskRecord.objects.get().pk, "host:1:abc")

    claimed.set_successful({"sum": 3})
    stored = TaskRecord.objects.get(pk=claimed.pk)
    assert stored.status == Status.SUCCESSFUL
    assert stored.return_value == {"sum": 3}
    assert stored.worker_ids == ["host:1:abc"]
    assert stored.finished_at == claimed.finished_at

    # A stale attempt (the reconciler gave the record to another worker).
    TaskRecord.objects.filter(pk=claimed.pk).update(status=Status.RUNNING, attempts=2)
    claimed.set_failed({"exception_class_path": "x.Y", "traceback": "late"})
    stored.refresh_from_db()
    assert stored.errors == []
    assert stored.attempts == 2
