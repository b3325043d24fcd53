"""Retention: finished records go after TASKS_RESULT_TTL (FAILED after
TASKS_FAILED_TTL), in batches, from the reconciler, the schedule and
``manage.py prune_tasks``; images forget the jobs that went."""

import time
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.tasks import TaskResultStatus
from django.utils import timezone

from tasks import retention
from tasks.models import TaskRecord
from tasks.reconciler import Reconciler
from thumbnails.models import Image

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("redis_server"),
]

Status = TaskResultStatus


def finished(status: str, days_ago: float, count: int = 1) -> list[str]:
    """``count`` records that finished ``days_ago`` days ago (or are still
    waiting or running, enqueued then)."""
    at = timezone.now() - timedelta(days=days_ago)
    records = [
        TaskRecord(
            task_path="tests.tasks.noop",
            backend="default",
            queue_name="default",
            status=status,
            enqueued_at=at - timedelta(seconds=1),
            finished_at=at if status in (Status.SUCCESSFUL, Status.FAILED) else None,
        )
        for _ in range(count)
    ]
    TaskRecord.objects.bulk_create(records)
    return [record.pk for record in records]


def left() -> set[str]:
    return set(TaskRecord.objects.values_list("pk", flat=True))


def test_each_status_goes_after_its_own_retention():
    # Given records of every status, younger and older than their retention
    old_success = finished(Status.SUCCESSFUL, 8)
    young_success = finished(Status.SUCCESSFUL, 6)
    old_failure = finished(Status.FAILED, 31)
    young_failure = finished(Status.FAILED, 8)
    waiting = finished(Status.READY, 60)
    running = finished(Status.RUNNING, 60)
    # When they are pruned
    deleted = retention.prune()
    # Then only the finished ones past retention are gone
    assert deleted == 2
    assert left() == set(young_success + young_failure + waiting + running)
    assert not left() & set(old_success + old_failure)


def test_settings_choose_the_retention(settings):
    settings.TASKS_RESULT_TTL = timedelta(hours=1)
    settings.TASKS_FAILED_TTL = timedelta(hours=2)
    kept = finished(Status.SUCCESSFUL, 0.5 / 24) + finished(Status.FAILED, 1.5 / 24)
    finished(Status.SUCCESSFUL, 1.5 / 24)
    finished(Status.FAILED, 2.5 / 24)
    assert retention.prune() == 2
    assert left() == set(kept)


def test_deletion_goes_in_batches():
    finished(Status.SUCCESSFUL, 10, count=35)
    batches = []
    assert retention.prune(batch=10, pause=0, progress=batches.append) == 35
    assert batches == [10, 10, 10, 5]


def test_an_image_forgets_its_pruned_job_and_keeps_its_status(django_user_model):
    owner = django_user_model.objects.create_user("keeper")
    (old,) = finished(Status.SUCCESSFUL, 8)
    (young,) = finished(Status.SUCCESSFUL, 1)
    common = {"owner": owner, "sha256": "0" * 64, "format": "JPEG", "width": 1,
              "height": 1, "byte_size": 1, "status": Image.Status.READY}  # fmt: skip
    pruned_image = Image.objects.create(original="a.jpg", task_id=old, **common)
    kept_image = Image.objects.create(original="b.jpg", task_id=young, **common)
    retention.prune()
    pruned_image.refresh_from_db()
    kept_image.refresh_from_db()
    assert (pruned_image.task_id, pruned_image.status) == ("", Image.Status.READY)
    assert kept_image.task_id == young


def test_the_reconcilers_sweep_prunes():
    finished(Status.SUCCESSFUL, 8, count=3)
    assert Reconciler().sweep().pruned == 3
    assert not left()


def test_the_scheduled_task_prunes():
    from tasks.retention import prune_expired

    finished(Status.FAILED, 40, count=2)
    assert prune_expired.call() == 2


def test_the_command_prunes_with_a_progress_bar():
    finished(Status.SUCCESSFUL, 8, count=3)
    young = finished(Status.SUCCESSFUL, 1)
    out, err = StringIO(), StringIO()
    call_command("prune_tasks", stdout=out, stderr=err)
    assert "Deleted 3 task record(s) past retention (successful 7d, failed 30d)." in (
        out.getvalue()
    )
    assert "100%" in err.getvalue()
    assert left() == set(young)


def test_the_command_can_only_count_or_take_its_own_age():
    finished(Status.SUCCESSFUL, 4, count=2)
    finished(Status.FAILED, 4)
    young = finished(Status.FAILED, 2)
    out = StringIO()
    call_command("prune_tasks", "--older-than", "3d", "--dry-run", stdout=out)
    assert out.getvalue().strip() == (
        "Would delete 3 task record(s) finished over 3d ago."
    )
    assert len(left()) == 4
    call_command(
        "prune_tasks", "--older-than", "3d", stdout=StringIO(), stderr=StringIO()
    )
    assert left() == set(young)


def test_a_pass_keeps_to_its_budget_pauses_included():
    finished(Status.SUCCESSFUL, 8, count=30)
    started = time.monotonic()
    # A pause of 1000 times each batch: the budget, not the pause, ends it
    deleted = retention.prune(batch=10, pause=1000, budget=0.5)
    assert 10 <= deleted < 30
    assert time.monotonic() - started < 5


def test_a_record_retried_by_hand_is_not_pruned(django_user_model):
    from tasks import lifecycle

    (record_id,) = finished(Status.FAILED, 40)
    assert lifecycle.retry(TaskRecord.objects.get(pk=record_id))
    retention.prune()
    assert TaskRecord.objects.get(pk=record_id).status == Status.READY


def test_a_job_failed_without_its_image_knowing_fails_the_image_when_pruned(
    django_user_model,
):
    owner = django_user_model.objects.create_user("keeper")
    (old,) = finished(Status.FAILED, 40)
    TaskRecord.objects.filter(pk=old).update(
        task_path="thumbnails.tasks.make_thumbnails",
        errors=[{"exception_class_path": "tasks.exceptions.WorkerLost",
                 "traceback": "tasks.exceptions.WorkerLost: lost"}],
    )  # fmt: skip
    image = Image.objects.create(
        owner=owner, original="a.jpg", sha256="0" * 64, format="JPEG", width=1,
        height=1, byte_size=1, status=Image.Status.PROCESSING, task_id=old,
    )  # fmt: skip
    retention.prune()
    image.refresh_from_db()
    assert (image.status, image.error, image.task_id) == (
        Image.Status.FAILED,
        "tasks.exceptions.WorkerLost: lost",
        "",
    )


def test_the_command_explains_a_bad_age():
    with pytest.raises(CommandError, match="--older-than: '3 days' is not a duration"):
        call_command("prune_tasks", "--older-than", "3 days")
