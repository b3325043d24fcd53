"""Schedules (TASKS_SCHEDULE): one enqueue per tick however many beats run,
no burst after downtime, Celery's crontab for cron entries, the system
check's errors, and where people see them (tasks_status, the admin)."""

import json
import threading
from datetime import UTC, datetime, timedelta
from io import StringIO

import pytest
from django.core import checks
from django.core.management import call_command
from django.db import connection
from django.tasks import TaskResultStatus
from django.urls import reverse
from django.utils import timezone

from tasks import schedules
from tasks.models import ScheduleState, TaskRecord
from tests import tasks
from tests.support import procfile_command, wait_for

MINUTE = timedelta(minutes=1)
MINUTELY = {"minutely": {"task": "tests.tasks.noop", "every": "1m"}}

db = pytest.mark.django_db(transaction=True)


def _noop_records():
    return TaskRecord.objects.filter(task_path="tests.tasks.noop")


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


# --- Two real beats -----------------------------------------------------------


@pytest.mark.slow
@db
def test_two_beats_at_once_enqueue_each_tick_at_most_once(
    start_process, celery_worker, tmp_path
):
    # Given a one-second schedule whose tasks run on Celery, and its row with
    # the first tick far away (so nothing fires while the processes start)
    done = str(tmp_path / "done")
    spec = {
        "task": "tests.tasks.record_run",
        "every": 1,
        "kwargs": {"path": done, "key": "tick"},
        "backend": "guaranteed",
    }
    definition = schedules.Schedule.parse("each-second", spec).definition
    ScheduleState.objects.create(
        name="each-second",
        definition=definition,
        next_run_at=timezone.now() + timedelta(days=1),
    )
    env = {
        "TASKS_SCHEDULE": json.dumps({"each-second": spec}),
        "TASKS_SCHEDULE_CHECK_SECONDS": "0.2",
        "TASKS_RECONCILE_INTERVAL_SECONDS": "5",
    }
    celery_worker(concurrency=2, **env)
    # And two beats, each with its own schedule file and pidfile
    beats = [
        start_process(
            f"beat-{n}",
            procfile_command("beat")
            + f" --schedule {tmp_path / f'beat-{n}'} --pidfile {tmp_path / f'{n}.pid'}",
            **env,
        )
        for n in (1, 2)
    ]
    for beat in beats:
        beat.wait_ready("beat: Starting", timeout=60, message=f"{beat} to start")
    # When the first tick is now, and several ticks pass
    first_tick = timezone.now()
    ScheduleState.objects.filter(pk="each-second").update(next_run_at=first_tick)
    records = TaskRecord.objects.filter(task_path="tests.tasks.record_run")
    wait_for(lambda: records.count() >= 4, timeout=60, message="four ticks to fire")
    end = timezone.now()
    # Then no tick was enqueued twice: no more records than ticks so far
    ticks = (end - first_tick) // timedelta(seconds=1) + 1
    enqueued = records.filter(enqueued_at__lte=end)
    assert 4 <= enqueued.count() <= ticks, (enqueued.count(), ticks)
    assert {r.backend for r in enqueued} == {"guaranteed"}
    # And both beats were sending checks all along
    for beat in beats:
        assert "Sending due task run-schedules (tasks.run_schedules)" in beat.output()
    # And the Celery worker ran what was enqueued
    wait_for(
        lambda: records.filter(status=TaskResultStatus.SUCCESSFUL).count() >= 4,
        timeout=60,
        message="the enqueued tasks to run",
    )
    assert len(tasks.runs(done)) >= 4


# --- run_due against the database ----------------------------------------------


@db
@pytest.mark.usefixtures("redis_server")
def test_a_new_entry_waits_for_its_first_tick(settings):
    settings.TASKS_SCHEDULE = MINUTELY
    now = timezone.now()
    # When beat first meets the entry
    assert schedules.run_due(now) == {}
    # Then nothing is enqueued, and its first tick is one interval away
    state = ScheduleState.objects.get(pk="minutely")
    assert state.next_run_at == now + MINUTE
    assert state.last_run_at is None
    assert not _noop_records().exists()
    # And at that tick it fires
    fired = schedules.run_due(now + MINUTE)
    assert list(fired) == ["minutely"]
    assert _noop_records().get().id == fired["minutely"]


@db
@pytest.mark.usefixtures("redis_server")
def test_ticks_missed_during_downtime_fire_once_then_the_next_future_tick(settings):
    # Given an entry whose last ten ticks passed while no beat ran
    settings.TASKS_SCHEDULE = MINUTELY
    now = timezone.now()
    schedules.run_due(now - 11 * MINUTE)
    planned = ScheduleState.objects.get().next_run_at
    assert planned == now - 10 * MINUTE
    # When beat checks again
    fired = schedules.run_due(now)
    # Then one task is enqueued, not ten
    assert _noop_records().count() == 1
    # And the next tick is the first one after now, on the same grid
    state = ScheduleState.objects.get()
    assert now < state.next_run_at <= now + MINUTE
    assert (state.next_run_at - planned) % MINUTE == timedelta(0)
    assert state.last_run_at == now
    assert state.last_task_id == fired["minutely"]
    # And checking again at once enqueues nothing more
    assert schedules.run_due(now + timedelta(seconds=1)) == {}
    assert _noop_records().count() == 1


@db
@pytest.mark.usefixtures("redis_server")
def test_two_concurrent_checks_of_one_due_tick_enqueue_it_once(settings, monkeypatch):
    # Given a due tick
    settings.TASKS_SCHEDULE = MINUTELY
    now = timezone.now()
    schedules.run_due(now - 2 * MINUTE)
    # And two checks that both read the row before either writes
    both_read = threading.Barrier(2, timeout=30)
    read = ScheduleState.objects.in_bulk

    def read_then_wait(*args, **kwargs):
        states = read(*args, **kwargs)
        both_read.wait()
        return states

    monkeypatch.setattr(ScheduleState.objects, "in_bulk", read_then_wait)
    results, errors = [], []

    def check():
        try:
            results.append(schedules.run_due(now))
        except Exception as error:
            errors.append(error)
        finally:
            connection.close()

    # When they run at once
    threads = [threading.Thread(target=check) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    # Then exactly one of them enqueued the task
    assert errors == []
    assert sorted(len(fired) for fired in results) == [0, 1]
    record = _noop_records().get()
    assert ScheduleState.objects.get().last_task_id == record.id


@db
@pytest.mark.usefixtures("redis_server")
def test_a_cron_entry_fires_at_its_ticks_and_keeps_its_arguments(settings):
    settings.TASKS_SCHEDULE = {
        "quarterly": {
            "task": "tests.tasks.add",
            "cron": "*/15 * * * *",
            "args": [40],
            "kwargs": {"b": 2},
            "backend": "guaranteed",
        }
    }
    schedules.run_due(_at("2030-05-01T10:02:00"))
    assert ScheduleState.objects.get().next_run_at == _at("2030-05-01T10:15:00")
    assert schedules.run_due(_at("2030-05-01T10:14:59")) == {}
    fired = schedules.run_due(_at("2030-05-01T10:15:00"))
    record = TaskRecord.objects.get(pk=fired["quarterly"])
    assert (record.args, record.kwargs, record.backend) == (
        [40],
        {"b": 2},
        "guaranteed",
    )
    assert ScheduleState.objects.get().next_run_at == _at("2030-05-01T10:30:00")


@db
@pytest.mark.usefixtures("redis_server")
def test_an_entry_changed_in_settings_starts_over_without_firing(settings):
    settings.TASKS_SCHEDULE = MINUTELY
    now = timezone.now()
    schedules.run_due(now - 5 * MINUTE)
    # When its interval is changed while a tick is due
    settings.TASKS_SCHEDULE = {"minutely": {"task": "tests.tasks.noop", "every": "1h"}}
    # Then it waits for its new first tick
    assert schedules.run_due(now) == {}
    state = ScheduleState.objects.get()
    assert state.next_run_at == now + timedelta(hours=1)
    assert json.loads(state.definition)["every"] == "1h"
    assert not _noop_records().exists()


@db
@pytest.mark.usefixtures("redis_server")
def test_a_failing_entry_records_its_error_and_the_others_still_fire(settings):
    settings.TASKS_SCHEDULE = {
        "broken": {"task": "tests.tasks.runs", "every": "1m"},  # not a @task
        **MINUTELY,
    }
    now = timezone.now()
    schedules.run_due(now - MINUTE)
    fired = schedules.run_due(now)
    assert list(fired) == ["minutely"]
    broken = ScheduleState.objects.get(pk="broken")
    assert "is not a django.tasks task" in broken.last_error
    assert broken.last_task_id == ""
    assert broken.next_run_at == now + MINUTE  # the tick is given up, not retried


# --- Next ticks (no database) ---------------------------------------------------


@pytest.mark.database_free
@pytest.mark.parametrize(
    ("expression", "after", "expected"),
    [
        ("17 3 * * *", "2030-05-01T03:16:59", "2030-05-01T03:17:00"),
        ("17 3 * * *", "2030-05-01T03:17:00", "2030-05-02T03:17:00"),  # strictly after
        ("*/15 * * * *", "2030-05-01T10:07:30", "2030-05-01T10:15:00"),
        ("* * * * *", "2030-12-31T23:59:30", "2031-01-01T00:00:00"),
        ("0 0 1 * *", "2030-01-31T12:00:00", "2030-02-01T00:00:00"),
        ("0 9 * * 1-5", "2030-05-03T10:00:00", "2030-05-06T09:00:00"),  # Fri -> Mon
        ("0 9 * * mon-fri", "2030-05-03T10:00:00", "2030-05-06T09:00:00"),
        ("0 0 29 2 *", "2030-03-01T00:00:00", "2032-02-29T00:00:00"),  # leap day
        ("30 4 1,15 * *", "2030-05-15T04:30:00", "2030-06-01T04:30:00"),
        ("0  12  *  *  *", "2030-05-01T13:00:00", "2030-05-02T12:00:00"),  # spaces
    ],
)
def test_next_cron_tick(expression, after, expected):
    assert schedules.next_cron_tick(expression, _at(after)) == _at(expected)


@pytest.mark.database_free
def test_cron_ticks_are_in_settings_time_zone_across_a_dst_change(settings):
    settings.TIME_ZONE = "Europe/Berlin"
    # 03:00 in Berlin on the night clocks go forward (CET -> CEST) is 01:00 UTC
    after = _at("2030-03-30T12:00:00")
    assert schedules.next_cron_tick("0 3 * * *", after) == _at("2030-03-31T01:00:00")
    # and the first of the month starts an hour before UTC's (CET)
    after = _at("2030-01-31T23:30:00")  # already 1 February in Berlin
    assert schedules.next_cron_tick("0 0 1 * *", after) == _at("2030-02-28T23:00:00")


@pytest.mark.database_free
def test_interval_ticks_stay_on_their_grid():
    schedule = schedules.Schedule.parse("s", {"task": "t.t", "every": "10s"})
    planned = _at("2030-05-01T10:00:00")
    seconds = timedelta(seconds=1)
    assert schedule.next_tick(planned, planned) == planned + 10 * seconds
    assert schedule.next_tick(planned, planned + 3 * seconds) == planned + 10 * seconds
    assert schedule.next_tick(planned, planned + 35 * seconds) == planned + 40 * seconds
    assert schedule.next_tick(planned, planned + 40 * seconds) == planned + 50 * seconds
    assert schedule.first_tick(planned) == planned + 10 * seconds


# --- The system check ------------------------------------------------------------


@pytest.mark.database_free
@pytest.mark.parametrize(
    ("spec", "check_id", "words"),
    [
        (
            {"task": "tests.tasks.nothing_here", "every": 5},
            "tasks.E021",
            "cannot import",
        ),
        ({"task": "no_such_module.task", "every": 5}, "tasks.E021", "cannot import"),
        ({"task": "tests.tasks.runs", "every": 5}, "tasks.E021", "not a django.tasks"),
        ({"task": "tests.tasks.noop", "cron": "61 * * * *"}, "tasks.E022", "bad cron"),
        ({"task": "tests.tasks.noop", "cron": "* * * *"}, "tasks.E022", "5 fields"),
        ({"task": "tests.tasks.noop", "cron": "0 0 30 2 *"}, "tasks.E022", "never"),
        ({"task": "tests.tasks.noop"}, "tasks.E023", "exactly one of"),
        (
            {"task": "tests.tasks.noop", "cron": "* * * * *", "every": 5},
            "tasks.E023",
            "exactly one of",
        ),
        (
            {"task": "tests.tasks.noop", "every": "often"},
            "tasks.E024",
            "not a duration",
        ),
        ({"task": "tests.tasks.noop", "every": 0}, "tasks.E024", "more than 0"),
        (
            {"task": "tests.tasks.noop", "every": 5, "backend": "nope"},
            "tasks.E025",
            "unknown backend 'nope'",
        ),
        (
            {
                "task": "thumbnails.tasks.make_thumbnails",
                "every": 5,
                "backend": "guaranteed",
            },
            "tasks.E026",
            "Queue 'thumbnailer' is not valid",
        ),
        ({"every": 5}, "tasks.E020", '"task"'),
        ({"task": "tests.tasks.noop", "every": 5, "when": 1}, "tasks.E020", "when"),
        ({"task": "tests.tasks.noop", "every": 5, "args": {}}, "tasks.E020", "list"),
    ],
)
def test_the_system_check_names_what_is_wrong(settings, spec, check_id, words):
    settings.TASKS_SCHEDULE = {"bad": spec, **MINUTELY}
    errors = schedules.check_schedules()
    assert [error.id for error in errors] == [check_id]
    assert errors[0].msg.startswith("TASKS_SCHEDULE['bad']: ")
    assert words in errors[0].msg


@pytest.mark.database_free
def test_a_schedule_setting_that_is_not_a_dict_is_an_error(settings):
    settings.TASKS_SCHEDULE = [MINUTELY]
    errors = schedules.check_schedules()
    assert [(e.id, e.msg) for e in errors] == [
        ("tasks.E020", "TASKS_SCHEDULE: must be a dict of named entries.")
    ]


@pytest.mark.django_db  # Django's model checks ask the database about JSON
def test_the_check_runs_with_django_s_checks_and_passes_the_shipped_schedule(
    settings,
):
    assert settings.TASKS_SCHEDULE["prune-tasks"] == {
        "task": "tasks.retention.prune_expired",
        "every": "1h",
    }
    assert schedules.check_schedules() == []
    settings.TASKS_SCHEDULE = {"bad": {"task": "tests.tasks.noop", "every": "x"}}
    assert "tasks.E024" in [error.id for error in checks.run_checks()]


# --- Where people see them --------------------------------------------------------


@db
@pytest.mark.usefixtures("redis_server")
def test_tasks_status_lists_every_schedule_with_its_last_and_next_run(settings):
    settings.TASKS_SCHEDULE = {
        **MINUTELY,
        "nightly": {"task": "tests.tasks.noop", "cron": "17 3 * * *"},
    }
    schedules.run_due(_at("2030-05-01T10:00:00"))
    schedules.run_due(_at("2030-05-01T10:01:00"))
    settings.TASKS_SCHEDULE["weekly"] = {"task": "tests.tasks.noop", "every": "1w"}
    out = StringIO()
    call_command("tasks_status", stdout=out)
    lines = out.getvalue().split("\n\n")[1].splitlines()
    assert lines[0].split() == [
        "name",
        "task",
        "schedule",
        "last",
        "run",
        "next",
        "run",
    ]
    rows = {line.split()[0]: line.split()[1:] for line in lines[2:]}
    assert rows["minutely"] == [
        "tests.tasks.noop", "every", "1m",
        "2030-05-01T10:01:00+00:00", "2030-05-01T10:02:00+00:00",
    ]  # fmt: skip
    assert rows["nightly"] == [
        "tests.tasks.noop", "cron", "17", "3", "*", "*", "*",
        "never", "2030-05-02T03:17:00+00:00",
    ]  # fmt: skip
    assert rows["weekly"] == [
        "tests.tasks.noop", "every", "1w", "never", "not", "yet", "seen", "by", "beat",
    ]  # fmt: skip


@db
@pytest.mark.usefixtures("redis_server")
def test_the_admin_lists_schedules_and_links_their_last_task(settings, admin_client):
    settings.TASKS_SCHEDULE = MINUTELY
    now = timezone.now()
    schedules.run_due(now - MINUTE)
    task_id = schedules.run_due(now)["minutely"]
    settings.TASKS_SCHEDULE = {
        **MINUTELY,
        "nightly": {"task": "tests.tasks.noop", "cron": "17 3 * * *"},
    }
    response = admin_client.get(reverse("admin:tasks_schedulestate_changelist"))
    page = response.content.decode()
    assert response.status_code == 200
    assert "minutely" in page and "tests.tasks.noop" in page and "every 1m" in page
    record_url = reverse("admin:tasks_taskrecord_change", args=[task_id])
    assert f'<a href="{record_url}">{task_id}</a>' in page
    assert "Not yet seen by beat: nightly." in page
    # And the row opens read-only, and there is no way to add one
    change = admin_client.get(
        reverse("admin:tasks_schedulestate_change", args=["minutely"])
    )
    assert change.status_code == 200 and "every 1m" in change.content.decode()
    assert "Save" not in change.content.decode()
    add = admin_client.get(reverse("admin:tasks_schedulestate_add"))
    assert add.status_code == 403
    # And once retention deleted the record, its id is shown without a link
    TaskRecord.objects.filter(pk=task_id).delete()
    page = admin_client.get(reverse("admin:tasks_schedulestate_changelist")).content
    assert task_id in page.decode() and record_url not in page.decode()
