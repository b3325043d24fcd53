"""The queue worker: one process with ``concurrency`` slots.

The record is the queue. A free slot claims the most urgent due READY record
of its queues from the database; only when there is none does it wait for a
wake-up message (at most POP_WAIT), then claims again whether one came or
not. So a message that expired, overflowed the channel or died with Redis
delays nothing but that one wait, and a slot takes work only when it is free:
a process holds at most ``concurrency`` tasks (the stock Channels worker
drains a channel into an unbounded in-memory queue).

Each slot has a thread. It claims and runs a sync task in one hop from the
event loop; coroutine tasks come back to the loop, which also handles signals.
A tasks.monitor.Monitor watches every running attempt, and ends this process
(exit code STOPPED_TASK_EXIT) to stop a sync task past its time limit or
cancelled while running; tasks.supervisor then starts a new one.

Through an outage of the database or Redis a slot waits and tries again; an
attempt whose task has returned keeps its outcome until the database takes
it (tasks.outage), heart-beaten by the monitor meanwhile, and its slot claims
nothing new until then. Only a process that dies with an outcome unwritten
leaves its record to be handed back.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

from django.db import close_old_connections, connections

from tasks import conf, execution, lifecycle, outage, registry, transport
from tasks.backends import channels_aliases
from tasks.models import Status, TaskRecord
from tasks.monitor import Monitor

logger = logging.getLogger(__name__)

# Exit code of a worker that ended itself to stop a task (not a crash).
STOPPED_TASK_EXIT = 3


class Worker:
    """Runs the Channels-backend tasks of ``queues`` with ``concurrency`` slots.

    The first SIGTERM/SIGINT stops claiming and lets running tasks finish; the
    second abandons them (exit code 1; the supervisor or the reconciler hands
    them back).
    """

    def __init__(
        self, queues: list[str], concurrency: int = 1, worker_id: str | None = None
    ) -> None:
        if not queues:
            raise ValueError("A worker needs at least one queue.")
        self.queues = list(queues)
        self.concurrency = concurrency
        self.worker_id = worker_id or new_worker_id()
        self.targets = tuple(
            (alias, queue) for alias in channels_aliases() for queue in self.queues
        )
        self.processed = 0
        self.monitor = Monitor(end_process=self._end_process)
        self._stopping = False
        self._counting = threading.Lock()
        # A thread per slot, apart from the loop's default executor (which
        # coroutine tasks' database calls use while their slot thread waits).
        self._slots = ThreadPoolExecutor(concurrency, thread_name_prefix="task-slot")

    def run(self) -> None:
        keep_database_connections()
        asyncio.run(self.serve())

    async def serve(self) -> None:
        """Serve until stopped by a signal (or :meth:`stop`)."""
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._on_signal, signum)
        logger.info(
            "Worker %s listening on %s with %d slot(s)",
            self.worker_id,
            ", ".join(self.queues),
            self.concurrency,
        )
        waiter = transport.waiter_for(self.queues)
        slot = self._slot_in_thread if waiter.blocking else self._slot_on_loop
        announcing = asyncio.ensure_future(self._announce())
        try:
            await asyncio.gather(*(slot(waiter) for _ in range(self.concurrency)))
        finally:
            announcing.cancel()
            waiter.close()
            await loop.run_in_executor(None, _quietly, registry.leave, self.worker_id)
        logger.info(
            "Worker %s stopped after %d task(s)", self.worker_id, self.processed
        )

    def stop(self) -> None:
        """Claim nothing more; running tasks finish. (A slot waiting for a
        wake-up sees this within POP_WAIT.)"""
        self._stopping = True

    async def _announce(self) -> None:
        """Tell the worker registry this process is alive (tasks.registry)."""
        loop = asyncio.get_running_loop()
        while True:
            await loop.run_in_executor(None, _quietly, registry.beat, self.worker_id)
            await asyncio.sleep(conf.get("TASKS_HEARTBEAT_SECONDS"))

    async def _slot_in_thread(self, popper) -> None:
        """A slot that lives in its thread: it claims, waits and runs sync
        tasks there, with no hop to the loop per task (the hop, the loop's
        wake-up and asgiref's bookkeeping were a fifth of a no-op's time);
        only coroutine tasks come to the loop."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._slots, self._serve_in_thread, popper, loop)

    def _serve_in_thread(self, popper, loop: asyncio.AbstractEventLoop) -> None:
        delay, claimed = outage.BACKOFF_START, None
        while not self._stopping or claimed is not None:
            try:
                outcome, claimed = self._take(popper, claimed)
                if isinstance(outcome, TaskRecord):
                    coroutine = self._run_coroutine(outcome)
                    outcome = asyncio.run_coroutine_threadsafe(coroutine, loop).result()
            except Exception as error:
                claimed = None  # (only a claim or a wait can fail: nothing held)
                _report(error)
                time.sleep(outage.jittered(delay))
                delay = _next_delay(error, delay)
                continue
            delay = outage.BACKOFF_START
            self._count(outcome)

    async def _slot_on_loop(self, waiter) -> None:
        """A slot for a layer read through its own receive: it claims and runs
        sync tasks in a thread, and waits for wake-ups on the loop."""
        loop = asyncio.get_running_loop()
        delay, claimed = outage.BACKOFF_START, None
        while not self._stopping or claimed is not None:
            try:
                outcome, claimed = await loop.run_in_executor(
                    self._slots, self._take, None, claimed
                )
                if isinstance(outcome, TaskRecord):
                    outcome = await self._run_coroutine(outcome)
                elif outcome is _NOTHING:
                    await waiter.wait()
                    outage.redis.answered()
            except Exception as error:
                claimed = None
                _report(error)
                await asyncio.sleep(outage.jittered(delay))
                delay = _next_delay(error, delay)
                continue
            delay = outage.BACKOFF_START
            self._count(outcome)

    def _take(
        self, popper, claimed: TaskRecord | None
    ) -> tuple[object, TaskRecord | None]:
        """In a slot's thread: run ``claimed``, or claim a record (waiting for
        a wake-up with ``popper`` when there is none). A sync task runs here,
        and its outcome is written in one transaction with the claim of the
        next record (one write, and one commit, per task instead of two).
        Returns (its outcome, a claimed coroutine record, or _NOTHING; the
        next claimed record or None)."""
        record = claimed or self._claim(popper)
        if record is None:
            return _NOTHING, None
        if execution.is_coroutine_task(record):
            return record, None
        with self.monitor.watching(record) as attempt:
            value, error = execution.call(record)
            if not self.monitor.finishing(attempt):
                # The monitor is stopping this attempt (its time limit, or its
                # record taken away) by ending the process: claim nothing more.
                self.stop()
                return None, None
            # Kept, and written once the database answers; until then the
            # monitor heart-beats the attempt and this slot claims nothing.
            return execution.write_outcome(record, value, error, then=self._claim_next)

    def _claim(self, popper) -> TaskRecord | None:
        close_old_connections()  # drops broken or aged connections only
        record = self._claim_now()
        outage.database.answered()
        if record is None and popper is not None and not self._stopping:
            popper.pop()
            outage.redis.answered()
            record = self._claim_now()
        return record

    def _claim_now(self) -> TaskRecord | None:
        return lifecycle.claim_next(self.targets, self.worker_id)

    def _claim_next(self) -> TaskRecord | None:
        """The next record, claimed with an outcome (none once stopping)."""
        return None if self._stopping else self._claim_now()

    async def _run_coroutine(self, record: TaskRecord) -> Status | None:
        running = asyncio.ensure_future(execution.call_async(record))
        with self.monitor.watching(record, task=running) as attempt:
            try:
                value, error = await running
            except asyncio.CancelledError:
                if asyncio.current_task().cancelling():
                    raise  # this slot itself is being cancelled
                return None  # the attempt lost its record and was stopped
            # A cancel that came too late changed nothing: write what it gave.
            self.monitor.finishing(attempt)
            loop = asyncio.get_running_loop()
            written = await loop.run_in_executor(
                None, execution.write_outcome, record, value, error
            )
        return written[0]

    def _on_signal(self, signum: int) -> None:
        if self._stopping:
            logger.warning(
                "Second %s: abandoning running tasks", signal.strsignal(signum)
            )
            os._exit(1)
        logger.info(
            "%s: finishing running tasks, then stopping (again to abandon them)",
            signal.strsignal(signum),
        )
        self.stop()

    def _end_process(self, why: str) -> None:
        logger.warning("Worker %s ends its process %s", self.worker_id, why)
        logging.shutdown()
        os._exit(STOPPED_TASK_EXIT)

    def _count(self, outcome) -> None:
        if outcome is not _NOTHING:
            with self._counting:
                self.processed += 1


_NOTHING = object()  # a slot's turn found no record to claim


def _quietly(func, *args) -> None:
    """Call func; a failure (Redis down) is logged, not raised: the registry
    only informs metrics."""
    try:
        func(*args)
    except Exception as error:
        logger.debug("Worker registry not updated: %s", error)


def _report(error: Exception) -> None:
    """Log a slot's failure: an outage of the database or Redis once (nothing
    is lost, the records decide), anything else each time."""
    if not (outage.absorb_database_outage(error) or outage.absorb_redis_outage(error)):
        logger.exception("Worker slot failed; trying again")


def _next_delay(error: Exception, delay: float) -> float:
    """How long a slot waits before it tries again: while Redis is down, as
    long as a wake-up wait (it claims from the database meanwhile); else
    twice as long as last time, up to a cap."""
    if outage.is_redis_outage(error):
        return transport.POP_WAIT
    return min(delay * 2, outage.BACKOFF_CAP)


def new_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def keep_database_connections() -> None:
    """Reuse each thread's database connection across tasks (checked for
    health before reuse), unless a pool already keeps them (PostgreSQL).
    Only in worker processes: Django advises against persistent connections
    under ASGI, where the web process runs."""
    for alias in connections:
        config = connections.settings[alias]
        if config.get("OPTIONS", {}).get("pool"):
            continue  # a pooled connection goes back to the pool instead
        config["CONN_MAX_AGE"] = None
        config["CONN_HEALTH_CHECKS"] = True
