"""Watching running attempts: heartbeats, ownership, time limits.

One thread per process (not one per task: starting a thread costs more than
a no-op task) looks at every attempt the process runs, every CHECK_INTERVAL:

- every ``TASKS_HEARTBEAT_SECONDS`` it refreshes their heartbeats, so the
  reconciler can tell a live worker from a dead one;
- in between, it checks (a read) that each attempt still owns its record:
  one that was cancelled, or handed to another worker, is stopped;
- an attempt past its task's time limit is stopped with TimeLimitExceeded.

An attempt whose task has returned (``finishing``) is only heart-beaten while
its outcome is written: through a database outage that can take long, and
its record must not look abandoned meanwhile. A heartbeat that fails is
tried again at the next check.

Stopping a coroutine attempt cancels it on its loop. A sync attempt cannot be
interrupted from outside its thread, so for it the monitor records the
outcome (TimeLimitExceeded) and calls ``end_process``: the worker process
exits and its supervisor starts a new one. Without ``end_process`` (the
Celery pool, whose own time limits and revoke stop tasks) the monitor only
heart-beats.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from tasks import conf, lifecycle, outage
from tasks.exceptions import TimeLimitExceeded
from tasks.models import TaskRecord

logger = logging.getLogger(__name__)

CHECK_INTERVAL = 0.5


@dataclass
class Attempt:
    record: TaskRecord
    deadline: float | None  # time.monotonic() after which it is stopped
    time_limit: float | None
    task: asyncio.Task | None = None  # a coroutine attempt's asyncio task
    stopping: bool = False  # the monitor is stopping it
    finishing: bool = False  # its task returned; its outcome is being written


class Monitor:
    def __init__(self, end_process: Callable[[str], None] | None = None) -> None:
        self._end_process = end_process
        self._attempts: dict[int, Attempt] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pid: int | None = None
        self._last_beat = -math.inf  # the first check beats

    @contextmanager
    def watching(
        self, record: TaskRecord, task: asyncio.Task | None = None
    ) -> Iterator[Attempt]:
        """Watch ``record``'s attempt while the block runs it."""
        attempt = _attempt(record, task)
        key = id(attempt)
        with self._lock:
            self._attempts[key] = attempt
            self._ensure_thread()
        try:
            yield attempt
        finally:
            with self._lock:
                self._attempts.pop(key, None)

    def finishing(self, attempt: Attempt) -> bool:
        """The attempt's task has returned: from now on the monitor only
        heart-beats it (never stops it) while its outcome is written, however
        long a database outage makes that take. False if the monitor was
        stopping it already (the outcome is then the monitor's to write)."""
        with self._lock:
            if attempt.stopping:
                return False
            attempt.finishing = True
            return True

    def check(self) -> None:
        """One look at every attempt (the thread's loop body)."""
        with self._lock:
            attempts = [a for a in self._attempts.values() if not a.stopping]
        if not attempts:
            return
        if self._end_process is not None:
            now = time.monotonic()
            for attempt in attempts:
                if attempt.deadline is not None and now > attempt.deadline:
                    limit = TimeLimitExceeded.after(
                        attempt.record.id, attempt.time_limit
                    )
                    self._stop(attempt, limit)
        for record in self._lost([a.record for a in attempts]):
            self._stop(next(a for a in attempts if a.record is record), None)

    def _lost(self, records: list[TaskRecord]) -> list[TaskRecord]:
        now = time.monotonic()
        if now - self._last_beat >= conf.get("TASKS_HEARTBEAT_SECONDS"):
            lost = lifecycle.heartbeat(records)
            self._last_beat = now  # (not after a failed beat: tried again soon)
            outage.database.answered()
            return lost
        if self._end_process is None:
            return []
        owned = {id(record) for record in lifecycle.still_owned(records)}
        outage.database.answered()
        return [record for record in records if id(record) not in owned]

    def _stop(self, attempt: Attempt, reason: BaseException | None) -> None:
        """Stop an attempt: ``reason`` is its failure, None if it lost its
        record. Not one that has ended or is writing its outcome meanwhile
        (it was looked at before: only a running one is stopped)."""
        with self._lock:
            if attempt.finishing or id(attempt) not in self._attempts:
                return
            attempt.stopping = True
        record = attempt.record
        if reason is None:
            logger.warning("Task id=%s: its record was taken away; stopping", record.id)
        if attempt.task is not None:
            loop = attempt.task.get_loop()
            loop.call_soon_threadsafe(attempt.task.cancel, reason)
            return
        if self._end_process is None:
            return
        if reason is not None:
            # The slot's thread still holds ``record``: write from a copy,
            # and through an outage, before this process ends.
            outage.until_written(lambda: lifecycle.fail(copy.copy(record), reason))
        self._end_process(f"to stop task id={record.id}")

    def _ensure_thread(self) -> None:
        if self._thread is None or self._pid != os.getpid():
            self._pid = os.getpid()
            self._thread = threading.Thread(
                target=self._watch_forever, name="task-monitor", daemon=True
            )
            self._thread.start()

    def _watch_forever(self) -> None:
        while True:
            time.sleep(CHECK_INTERVAL)
            try:
                self.check()
            except Exception as error:
                # After an outage: heart-beaten again at the next check.
                if not outage.absorb_database_outage(error):
                    logger.warning("Monitoring running tasks failed", exc_info=True)


def _attempt(record: TaskRecord, task: asyncio.Task | None) -> Attempt:
    try:
        limit = record.get_task().time_limit
    except Exception:
        limit = None  # not importable: it fails at once anyway
    deadline = time.monotonic() + limit if limit else None
    return Attempt(record, deadline, limit, task)
