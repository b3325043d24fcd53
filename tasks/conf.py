"""Every setting the job system reads, with its default: the one place they
are read. A project sets only those it wants to change; any other takes the
default below (the README's configuration table lists them all).

Read at each use, not at import, so that a changed setting (a test's) is seen.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from django.conf import settings

DEFAULTS: dict[str, Any] = {
    # How often a worker marks its running attempts (and itself) alive.
    "TASKS_HEARTBEAT_SECONDS": 2.0,
    # A RUNNING record whose heartbeat is older than this is handed back.
    "TASKS_STALE_AFTER_SECONDS": 30.0,
    # A READY Celery record sent longer ago than this, and not run, is sent again.
    "TASKS_RESEND_AFTER_SECONDS": 90.0,
    # Seconds an attempt may run, unless its task sets ``timeout``.
    "TASKS_DEFAULT_TIMEOUT": 30 * 60.0,
    # How often ``reconcile_tasks --loop`` sweeps.
    "TASKS_RECONCILE_INTERVAL_SECONDS": 10.0,
    # How long finished records are kept (tasks.retention).
    "TASKS_RESULT_TTL": timedelta(days=7),
    "TASKS_FAILED_TTL": timedelta(days=30),
    # Per queue: at most N of its tasks RUNNING at once (tasks.limits).
    "TASKS_QUEUE_CONCURRENCY": {},
    # Periodic tasks (tasks.schedules).
    "TASKS_SCHEDULE": {},
    # The Redis of the worker registry and the reconciler's lock.
    "REDIS_URL": "redis://localhost:6379/0",
}


def get(name: str) -> Any:
    """``settings.<name>``, or its default when the project does not set it."""
    return getattr(settings, name, DEFAULTS[name])


def visibility_timeout() -> float:
    """Seconds the Celery broker keeps an unacknowledged message before it
    delivers it again: CELERY_BROKER_TRANSPORT_OPTIONS' ``visibility_timeout``,
    else kombu's default for Redis."""
    options = getattr(settings, "CELERY_BROKER_TRANSPORT_OPTIONS", {})
    return options.get("visibility_timeout", KOMBU_VISIBILITY_TIMEOUT)


KOMBU_VISIBILITY_TIMEOUT = 3600.0


def parse_duration(text: str) -> timedelta:
    """``"3d"``, ``"12h"``, ``"30m"``, ``"45s"``, ``"1w"`` or plain seconds
    (``"90"``, ``"0.5"``) as a timedelta; ValueError says what is accepted."""
    match = _DURATION.fullmatch(text.strip().lower())
    if match is None:
        raise ValueError(
            f"{text!r} is not a duration; use a number with s, m, h, d or w "
            "(e.g. 30m, 3d), or seconds."
        )
    number, unit = float(match["number"]), match["unit"] or "s"
    return timedelta(seconds=number * _UNIT_SECONDS[unit])


_DURATION = re.compile(r"(?P<number>\d+(?:\.\d+)?)\s*(?P<unit>[smhdw])?")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
