"""Riding out an outage of the database or Redis.

A database restarts (a failover, an upgrade, an OOM kill), a pooler or a
firewall cuts a connection, SQLite's write lock is held past the busy
timeout. Every long-running part of the job system (worker slots, the
monitor, the supervisor, the reconciler, the Celery hooks) treats what such
an event raises as temporary, through this module:

- ``is_database_outage(error)`` says whether an error is one (a lost or
  refused connection, a server shutting down, a lock, busy or serialization
  timeout), as opposed to a bug that would fail again the same way;
- ``database`` and ``redis`` track each dependency's state in this process,
  so an outage is logged once: one WARNING with its cause when it starts,
  one INFO when it ends, whatever the number of threads that hit it;
- ``absorb_database_outage(error)`` and ``absorb_redis_outage(error)`` say
  whether a caught error is such an outage, noting it when it is, for a
  caller that goes on (or tries again later) instead of raising;
- ``until_written(write)`` calls a write that must not be lost (an attempt's
  outcome) until the database takes it: backoff with jitter, no limit.
"""

from __future__ import annotations

import logging
import math
import os
import random
import sqlite3
import threading
import time
from collections.abc import Callable

from django.db import InterfaceError, OperationalError, close_old_connections
from redis import exceptions as redis_errors

from tasks.exceptions import TransportUnavailable

logger = logging.getLogger(__name__)

# Backoff between tries of a write: from BACKOFF_START seconds, doubling, up
# to BACKOFF_CAP (so a write lands within a few seconds of the database's
# return), each one ``jittered``.
BACKOFF_START = 0.1
BACKOFF_CAP = 2.0
# After an outage, connections opened before it may fail once each for this
# long: such failures are not a new outage.
SETTLE_SECONDS = 5.0

# What SQLite's OperationalError says when the cause passes (the others, such
# as "no such table", are bugs: trying again would not help).
_SQLITE_TRANSIENT = (
    "database is locked",
    "database is busy",
    "database table is locked",
    "disk i/o error",
    "unable to open database file",
)


def is_database_outage(error: BaseException) -> bool:
    """Whether ``error`` is the database (or the way to it) failing for now."""
    if isinstance(error, InterfaceError):
        return True  # the connection is closed or broken
    if not isinstance(error, OperationalError):
        return False
    cause = error.__cause__
    if isinstance(cause, sqlite3.OperationalError):
        return str(cause).lower().startswith(_SQLITE_TRANSIENT)
    return True  # PostgreSQL: connection, shutdown, lock and timeout errors


def is_redis_outage(error: BaseException) -> bool:
    """Whether ``error`` is Redis unreachable or not answering in time."""
    return isinstance(
        error,
        redis_errors.ConnectionError | redis_errors.TimeoutError | TransportUnavailable,
    )


class Dependency:
    """One dependency's state in this process, to log each outage once: a
    WARNING at its first failure, an INFO at the first success after it.

    Right after an outage ends, a connection opened before it may still fail
    once (a pooled or kept one, on its first use since): a failure within
    SETTLE_SECONDS of a logged outage's end is taken for that, and logged
    only if failures go on past that time.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._lock = threading.Lock()
        self._down_since: float | None = None
        self._warned = False
        self._recovered_at = -math.inf

    @property
    def down(self) -> bool:
        return self._down_since is not None

    def failed(self, error: BaseException) -> None:
        """A call to it failed: the first failure of an outage is logged."""
        now = time.monotonic()
        with self._lock:
            if self._down_since is None:
                self._down_since = now
            quiet = self._warned or now - self._recovered_at < SETTLE_SECONDS
            self._warned |= not quiet
        if quiet:
            logger.debug("%s unavailable: %s", self.name, error)
            return
        logger.warning(
            "%s unavailable in process %d (%s: %s); waiting for it, nothing is lost",
            self.name,
            os.getpid(),
            type(error).__name__,
            _first_line(error),
        )

    def answered(self) -> None:
        """A call to it succeeded: the outage, if any, has ended."""
        if self._down_since is None:
            return
        now = time.monotonic()
        with self._lock:
            if self._down_since is None:
                return
            lasted, warned = now - self._down_since, self._warned
            self._down_since, self._warned = None, False
            if warned:
                self._recovered_at = now
        if warned:
            logger.info(
                "%s available again in process %d (after %.1f s)",
                self.name,
                os.getpid(),
                lasted,
            )


database = Dependency("Database")
redis = Dependency("Redis")


def absorb_database_outage(error: BaseException) -> bool:
    """Whether ``error`` is a database outage. If it is, it is noted (logged
    once per outage) and this thread's broken connections are dropped, so
    that the next try reconnects."""
    if not is_database_outage(error):
        return False
    database.failed(error)
    drop_broken_connections()
    return True


def absorb_redis_outage(error: BaseException) -> bool:
    """Whether ``error`` is a Redis outage; if it is, it is noted (logged once
    per outage)."""
    if not is_redis_outage(error):
        return False
    redis.failed(error)
    return True


def until_written[T](write: Callable[[], T]) -> T:
    """``write()``, tried again through a database outage until it succeeds.

    Between tries this thread's broken connections are dropped (the next try
    opens a new one, or takes one from the pool). Any other error is raised
    at once. A write that failed may still have committed (the server went
    down as it answered): ``write`` must be safe to repeat, which every
    conditional write of tasks.lifecycle is (a repeated one finds the record
    no longer owned, and changes nothing).
    """
    delay = BACKOFF_START
    while True:
        try:
            result = write()
        except Exception as error:
            if not absorb_database_outage(error):
                raise
            time.sleep(jittered(delay))
            delay = min(delay * 2, BACKOFF_CAP)
            continue
        database.answered()
        return result


def jittered(delay: float) -> float:
    """``delay`` times a random factor in [0.5, 1.5): the slots of many
    workers do not all try again at the same instant."""
    return delay * random.uniform(0.5, 1.5)  # noqa: S311 (not for secrets)


def drop_broken_connections() -> None:
    """Close this thread's database connections that failed and do not work
    (a pooled one goes back to its pool, which discards it)."""
    try:
        close_old_connections()
    except Exception as error:  # closing a dead connection can fail too
        logger.debug("Closing a broken connection failed: %s", error)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else ""
