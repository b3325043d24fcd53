"""Reconciler limits, events, the admin's actions and the inspection commands."""

from datetime import timedelta
from io import StringIO

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.core.management import call_command
from django.tasks import TaskResultStatus
from django.urls import reverse
from django.utils import timezone

from tasks.context import enqueued_by
from tasks.events import owner_group
from tasks.models import TaskRecord
from tasks.reconciler import Reconciler
from tests import tasks
from tests.support import wait_finished

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("redis_server"),
]


def _running_record(attempts: int, max_attempts: int, beat_age: float) -> TaskRecord:
    result = tasks.add.enqueue(1, 1)
    TaskRecord.objects.filter(pk=result.id).update(
        status=TaskResultStatus.RUNNING,
        attempts=attempts,
        max_attempts=max_attempts,
        heartbeat_at=timezone.now() - timedelta(seconds=beat_age),
        claimed_by="host:1:dead",
    )
    return TaskRecord.objects.get(pk=result.id)


def test_stale_record_at_its_attempt_limit_fails_with_the_reason():
    record = _running_record(attempts=3, max_attempts=3, beat_age=60)
    report = Reconciler().sweep()
    record.refresh_from_db()
    assert report.failed == 1
    assert record.status == TaskResultStatus.FAILED
    assert (
        "host:1:dead stopped heart-beating during attempt 3 of 3" in record.last_error
    )


def test_stale_record_under_its_limit_is_made_ready_and_resent():
    record = _running_record(attempts=1, max_attempts=3, beat_age=60)
    report = Reconciler().sweep()
    record.refresh_from_db()
    assert report.requeued == 1
    assert record.status == TaskResultStatus.READY
    assert record.sent_at is not None


def test_fresh_heartbeat_is_left_alone():
    record = _running_record(attempts=1, max_attempts=3, beat_age=0)
    assert Reconciler().sweep().requeued == 0
    record.refresh_from_db()
    assert record.status == TaskResultStatus.RUNNING


def test_only_one_reconciler_sweeps_at_a_time():
    first, second = Reconciler(), Reconciler()
    assert first._redis.set("tasks:reconciler:lock", first._token, nx=True, ex=10)
    try:
        assert second.sweep().skipped
    finally:
        first._release()


def test_status_changes_reach_the_owners_group(worker, django_user_model):
    # Given a user's group with a listener
    user = django_user_model.objects.create_user("ann", password="pw-123456789")
    layer = get_channel_layer()
    channel = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)(owner_group(user.pk), channel)
    # When a task of theirs runs
    worker("default")
    with enqueued_by(user):
        result = tasks.with_progress.enqueue(2)
    wait_finished(result)
    # Then the listener sees RUNNING, progress and SUCCESSFUL
    seen = []
    while not seen or seen[-1]["status"] != "SUCCESSFUL":
        seen.append(async_to_sync(layer.receive)(channel))
    assert seen[0]["type"] == "task.update"
    assert seen[0]["id"] == result.id
    assert seen[0]["status"] == "RUNNING"
    assert {"step 1 of 2", "step 2 of 2"} <= {e["message"] for e in seen}


def test_admin_retry_and_cancel(admin_client):
    failed = tasks.add.enqueue(1, 2)
    TaskRecord.objects.filter(pk=failed.id).update(
        status=TaskResultStatus.FAILED, attempts=3, max_attempts=3
    )
    pending = tasks.add.enqueue(3, 4)
    url = reverse("admin:tasks_taskrecord_changelist")
    response = admin_client.post(
        url,
        {"action": "retry_selected", "_selected_action": [failed.id, pending.id]},
        follow=True,
    )
    assert "1 task was queued again." in response.content.decode()
    assert TaskRecord.objects.get(pk=failed.id).status == TaskResultStatus.READY
    response = admin_client.post(
        url,
        {"action": "cancel_selected", "_selected_action": [pending.id]},
        follow=True,
    )
    assert "1 task was cancelled." in response.content.decode()
    cancelled = TaskRecord.objects.get(pk=pending.id)
    assert cancelled.status == TaskResultStatus.FAILED
    assert cancelled.last_error == (
        "tasks.exceptions.TaskCancelled: Cancelled before it ran."
    )
    assert admin_client.get(url + "?status__exact=FAILED&q=add").status_code == 200


def test_tasks_status_prints_a_table_per_queue():
    tasks.add.enqueue(1, 1)
    tasks.add.enqueue(1, 1)
    out = StringIO()
    call_command("tasks_status", stdout=out)
    lines = out.getvalue().splitlines()
    assert lines[0].split() == [
        "queue",
        "backend",
        "channel",
        "READY",
        "RUNNING",
        "FAILED",
        "SUCCESSFUL",
    ]
    assert lines[2].split() == ["default", "default", "2", "2", "0", "0", "0"]


def test_retry_failed_command_filters_by_task():
    keep = tasks.add.enqueue(1, 1)
    other = tasks.noop.enqueue()
    TaskRecord.objects.update(status=TaskResultStatus.FAILED)
    out = StringIO()
    call_command("retry_failed", "--task", "tests.tasks.add", stdout=out)
    assert "Queued 1 failed task(s) again." in out.getvalue()
    assert TaskRecord.objects.get(pk=keep.id).status == TaskResultStatus.READY
    assert TaskRecord.objects.get(pk=other.id).status == TaskResultStatus.FAILED


def test_sweep_checkpoints_the_sqlite_log():
    """Checkpoints run in the sweep, not in a worker's commit (latency spikes)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    if connection.vendor != "sqlite":
        pytest.skip("SQLite only")
    with CaptureQueriesContext(connection) as queries:
        Reconciler().sweep()
    assert "PRAGMA wal_checkpoint(PASSIVE)" in [q["sql"] for q in queries]


def test_beat_task_sweeps_with_one_reconciler_per_process():
    from tasks.celery_tasks import _reconciler, reconcile

    record = _running_record(attempts=1, max_attempts=3, beat_age=60)
    assert reconcile.run()["requeued"] == 1
    assert _reconciler() is _reconciler()
    record.refresh_from_db()
    assert record.status == TaskResultStatus.READY
