"""Periodic tasks (settings.TASKS_SCHEDULE), enqueued at most once per tick.

Celery beat sends one Celery task, ``tasks.run_schedules``, every
TASKS_SCHEDULE_CHECK_SECONDS (settings' "run-schedules" entry, which expires
after one interval, so a backlog of checks is dropped, not replayed). It calls
:func:`run_due`, which keeps each entry's next tick in a ScheduleState row and
moves it with a compare-and-set UPDATE before enqueueing, in one transaction:
with two beats (two hosts, a rolling deploy) both may find a tick due, but
only the one whose UPDATE changed the row enqueues. A tick missed while
nothing ran fires once, then the next tick in the future: no burst after
downtime. An entry seen for the first time (or changed in settings) waits for
its next tick; it does not fire at once.

Cron expressions are Celery's ``crontab`` (minute hour day-of-month month
day-of-week, Sunday = 0, both day fields must match), in settings.TIME_ZONE.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from celery import shared_task
from celery.schedules import ParseException, crontab
from django.conf import settings
from django.core.checks import Error, register
from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError, transaction
from django.tasks import Task, TaskResult
from django.tasks.exceptions import InvalidTask
from django.utils import timezone
from django.utils.module_loading import import_string

from tasks import conf, outage
from tasks.exceptions import JobSystemError
from tasks.models import ScheduleState

__all__ = [
    "Schedule",
    "ScheduleError",
    "check_schedules",
    "configured",
    "describe",
    "next_cron_tick",
    "run_due",
    "run_schedules",
]

logger = logging.getLogger(__name__)

KEYS = {"task", "cron", "every", "args", "kwargs", "backend"}


class ScheduleError(JobSystemError, ImproperlyConfigured):
    """A TASKS_SCHEDULE entry that cannot be run; ``check_id`` names the
    system check that reports it."""

    def __init__(self, name: str | None, message: str, check_id: str) -> None:
        where = "TASKS_SCHEDULE" if name is None else f"TASKS_SCHEDULE[{name!r}]"
        super().__init__(f"{where}: {message}")
        self.check_id = check_id


@shared_task(name="tasks.run_schedules", ignore_result=True)
def run_schedules() -> dict[str, str]:
    """Celery beat's one entry for every schedule (settings' "run-schedules").
    While the database is down a check does nothing (the outage is logged
    once); a tick missed meanwhile fires at the first check after it."""
    try:
        fired = run_due(timezone.now())
    except DatabaseError as error:
        if not outage.absorb_database_outage(error):
            raise
        return {}
    outage.database.answered()
    return fired


def run_due(now: datetime) -> dict[str, str]:
    """Enqueue each entry whose tick is due at ``now``; return ``{name: task
    id}`` of those this call enqueued. A failing entry is logged and never
    stops the others."""
    schedules, errors = _parse_all()
    for error in errors:
        logger.error("%s (skipped)", error)
    states = ScheduleState.objects.in_bulk([s.name for s in schedules])
    fired = {}
    for schedule in schedules:
        try:
            task_id = _advance(schedule, states.get(schedule.name), now)
        except Exception as error:
            if outage.is_database_outage(error):
                raise  # the others would fail alike
            logger.exception("Schedule %s could not be advanced.", schedule.name)
            continue
        if task_id:
            fired[schedule.name] = task_id
    return fired


def configured() -> list[Schedule]:
    """The valid entries of settings.TASKS_SCHEDULE, in settings' order."""
    return _parse_all()[0]


@register()
def check_schedules(**kwargs) -> list[Error]:
    """System check: every entry parses, names a task and a known backend."""
    schedules, errors = _parse_all()
    for schedule in schedules:
        try:
            schedule.task()
        except ScheduleError as error:
            errors.append(error)
    return [Error(str(error), id=error.check_id) for error in errors]


def next_cron_tick(expression: str, after: datetime) -> datetime:
    """The first time strictly after ``after`` that matches ``expression``,
    computed by Celery's crontab in settings.TIME_ZONE (returned in UTC)."""
    cron = _crontab(expression)
    cron.nowfun = lambda: after
    cron.tz = timezone.get_default_timezone()
    return (after + cron.remaining_estimate(after)).astimezone(UTC)


def describe(spec: dict) -> str:
    """How an entry repeats, for people: ``cron 17 3 * * *``, ``every 1h``."""
    if "cron" in spec:
        return f"cron {spec['cron']}"
    every = spec.get("every", "?")
    return f"every {every} s" if isinstance(every, int | float) else f"every {every}"


@dataclass(frozen=True)
class Schedule:
    """One TASKS_SCHEDULE entry, validated."""

    name: str
    task_path: str
    cron: str | None
    every: timedelta | None
    args: list
    kwargs: dict
    backend: str | None
    # The entry as canonical JSON: a change in settings is seen by comparing it.
    definition: str

    @classmethod
    def parse(cls, name: str, spec: object) -> Schedule:
        """Validate one entry (its task is imported only by :meth:`task`)."""
        if not isinstance(spec, dict) or not isinstance(spec.get("task"), str):
            raise ScheduleError(
                name, 'must be a dict with a "task" (a dotted path).', "tasks.E020"
            )
        if unknown := set(spec) - KEYS:
            keys = ", ".join(sorted(unknown))
            raise ScheduleError(name, f"unknown keys {keys}.", "tasks.E020")
        args, kwargs = spec.get("args", []), spec.get("kwargs", {})
        if not isinstance(args, list) or not isinstance(kwargs, dict):
            raise ScheduleError(
                name, '"args" must be a list and "kwargs" a dict.', "tasks.E020"
            )
        cron, every = _timing(name, spec)
        backend = spec.get("backend")
        if backend is not None and backend not in settings.TASKS:
            known = ", ".join(settings.TASKS)
            raise ScheduleError(
                name, f"unknown backend {backend!r}; TASKS has {known}.", "tasks.E025"
            )
        try:
            definition = json.dumps(spec, sort_keys=True, separators=(",", ":"))
        except TypeError as error:
            raise ScheduleError(
                name, f"is not JSON data: {error}", "tasks.E020"
            ) from None
        return cls(name, spec["task"], cron, every, args, kwargs, backend, definition)

    @property
    def timing(self) -> str:
        return describe(json.loads(self.definition))

    def first_tick(self, now: datetime) -> datetime:
        """The tick an entry first seen at ``now`` waits for."""
        if self.cron:
            return next_cron_tick(self.cron, now)
        return now + self.every

    def next_tick(self, planned: datetime, now: datetime) -> datetime:
        """The tick after the due one (``planned``): the first one after
        ``now``. Intervals stay anchored to ``planned`` so they never drift."""
        if self.cron:
            return next_cron_tick(self.cron, now)
        return planned + ((now - planned) // self.every + 1) * self.every

    def task(self) -> Task:
        """The django.tasks Task to enqueue, on the entry's backend if it names one."""
        try:
            task = import_string(self.task_path)
        except ImportError as error:
            raise ScheduleError(
                self.name,
                f"cannot import task {self.task_path!r} ({error}).",
                "tasks.E021",
            ) from error
        if not isinstance(task, Task):
            raise ScheduleError(
                self.name,
                f"{self.task_path!r} is not a django.tasks task (@task).",
                "tasks.E021",
            )
        if self.backend is None:
            return task
        try:
            return task.using(backend=self.backend)
        except InvalidTask as error:
            raise ScheduleError(
                self.name,
                f"backend {self.backend!r} refuses it: {error}",
                "tasks.E026",
            ) from error

    def enqueue(self) -> TaskResult:
        return self.task().enqueue(*self.args, **self.kwargs)


def _parse_all() -> tuple[list[Schedule], list[ScheduleError]]:
    config = conf.get("TASKS_SCHEDULE")
    if not isinstance(config, dict):
        message = "must be a dict of named entries."
        return [], [ScheduleError(None, message, "tasks.E020")]
    schedules, errors = [], []
    for name, spec in config.items():
        try:
            schedules.append(Schedule.parse(name, spec))
        except ScheduleError as error:
            errors.append(error)
    return schedules, errors


def _timing(name: str, spec: dict) -> tuple[str | None, timedelta | None]:
    """(cron, every) of an entry: exactly one is set."""
    if ("cron" in spec) == ("every" in spec):
        raise ScheduleError(
            name, 'needs exactly one of "cron" and "every".', "tasks.E023"
        )
    if "cron" in spec:
        try:
            _crontab(spec["cron"])
        except (TypeError, ValueError, ParseException) as error:
            raise ScheduleError(
                name, f"bad cron {spec['cron']!r}: {error}", "tasks.E022"
            ) from None
        return spec["cron"], None
    return None, _interval(name, spec["every"])


def _interval(name: str, every: object) -> timedelta:
    try:
        if isinstance(every, bool) or not isinstance(every, int | float | str):
            raise ValueError("use seconds or a string such as 30m or 1h")
        interval = conf.parse_duration(str(every))
    except ValueError as error:
        raise ScheduleError(
            name, f'bad "every" {every!r}: {error}', "tasks.E024"
        ) from None
    if interval <= timedelta(0):
        raise ScheduleError(name, '"every" must be more than 0.', "tasks.E024")
    return interval


def _crontab(expression: str) -> crontab:
    fields = expression.split()
    if len(fields) != 5:
        raise ValueError(
            "use 5 fields: minute hour day-of-month month day-of-week "
            f"(got {len(fields)})"
        )
    return crontab.from_string(" ".join(fields))


def _advance(
    schedule: Schedule, state: ScheduleState | None, now: datetime
) -> str | None:
    """Create the row of a new entry, restart a changed one, fire a due one."""
    if state is None:
        ScheduleState.objects.get_or_create(
            name=schedule.name,
            defaults={
                "definition": schedule.definition,
                "next_run_at": schedule.first_tick(now),
            },
        )
        return None
    if state.definition != schedule.definition:
        ScheduleState.objects.filter(pk=state.pk, definition=state.definition).update(
            definition=schedule.definition, next_run_at=schedule.first_tick(now)
        )
        return None
    if state.next_run_at > now:
        return None
    return _fire(schedule, state.next_run_at, now)


def _fire(schedule: Schedule, planned: datetime, now: datetime) -> str | None:
    """Move the due tick on and enqueue, if this process moved it. A failing
    enqueue is rolled back; the tick is then given up with ``last_error``
    (not retried at every check)."""
    following = schedule.next_tick(planned, now)
    try:
        with transaction.atomic():
            if not _claim(schedule.name, planned, following, now):
                return None
            result = schedule.enqueue()
            ScheduleState.objects.filter(pk=schedule.name).update(
                last_task_id=result.id, last_error=""
            )
    except Exception as error:
        if outage.is_database_outage(error):
            raise  # rolled back: the tick stays due, for the next check
        logger.exception("Schedule %s: enqueue failed.", schedule.name)
        _claim(
            schedule.name,
            planned,
            following,
            now,
            last_task_id="",
            last_error=f"{type(error).__name__}: {error}",
        )
        return None
    logger.info(
        "Schedule %s: enqueued %s id=%s; next run at %s",
        schedule.name,
        schedule.task_path,
        result.id,
        following.isoformat(),
    )
    return result.id


def _claim(
    name: str, planned: datetime, following: datetime, now: datetime, **fields
) -> bool:
    """Compare-and-set: whether this process moved ``planned`` to ``following``."""
    changed = ScheduleState.objects.filter(pk=name, next_run_at=planned).update(
        next_run_at=following, last_run_at=now, **fields
    )
    return changed == 1
