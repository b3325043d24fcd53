"""The queue worker behind ``manage.py runworker``.

Unlike the stock Channels worker, which drains a channel into an unbounded
in-memory queue (one process hoards, a crash loses the buffer, a handler that
raises drops everything behind it), this worker takes a message only when it
has a free slot: a process holds at most ``concurrency`` messages.

Each slot has a thread. With the direct Redis receiver a slot's thread pops,
claims and runs a sync task in one go (one hop from the event loop per
task); coroutine tasks run on the event loop, which also handles signals.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import uuid
from concurrent.futures import ThreadPoolExecutor

from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.db import connections

from tasks import execution
from tasks.models import TaskRecord
from tasks.receivers import receiver_for

logger = logging.getLogger(__name__)

BACKOFF_START = 0.1
BACKOFF_CAP = 5.0


class Worker:
    """Runs the tasks of ``queues`` with ``concurrency`` slots.

    The first SIGTERM/SIGINT stops taking messages and lets running tasks
    finish; the second abandons them (the reconciler retries them).
    """

    def __init__(self, queues: list[str], concurrency: int = 1) -> None:
        if not queues:
            raise ValueError("A worker needs at least one queue.")
        self.queues = list(queues)
        self.concurrency = concurrency
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.processed = 0
        self._stopping = False
        self._waiting: set[asyncio.Task] = set()

    def run(self) -> None:
        keep_database_connections()
        asyncio.run(self.serve())

    def _executor(self) -> ThreadPoolExecutor:
        """A thread per slot (asyncio's default pool has min(32, CPUs + 4))."""
        return ThreadPoolExecutor(self.concurrency, thread_name_prefix="task-slot")

    async def serve(self) -> None:
        """Serve until stopped by a signal (or :meth:`stop`)."""
        loop = asyncio.get_running_loop()
        loop.set_default_executor(self._executor())
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._on_signal, signum)
        logger.info(
            "Worker %s listening on %s with %d slot(s)",
            self.worker_id,
            ", ".join(self.queues),
            self.concurrency,
        )
        receiver = receiver_for(get_channel_layer(), self.queues)
        try:
            await asyncio.gather(
                *(self._slot(receiver) for _ in range(self.concurrency))
            )
        finally:
            await receiver.close()
        logger.info(
            "Worker %s stopped after %d task(s)", self.worker_id, self.processed
        )

    def stop(self) -> None:
        """Take no new messages; running tasks finish. (A slot waiting in a
        blocking pop sees this within receivers.POP_WAIT.)"""
        self._stopping = True
        for waiter in list(self._waiting):
            waiter.cancel()

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

    async def _slot(self, receiver) -> None:
        take = self._take_in_thread if receiver.blocking else self._take_on_loop
        delay = BACKOFF_START
        while not self._stopping:
            try:
                await take(receiver)
            except asyncio.CancelledError:
                if self._stopping:
                    return
                raise
            except ReceiveFailed as failure:
                logger.warning(
                    "Receive failed (%s); retrying in %.1f s", failure, delay
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, BACKOFF_CAP)
                continue
            delay = BACKOFF_START

    async def _take_in_thread(self, receiver) -> None:
        """Pop, claim and run a sync task in one hop to the slot's thread."""
        for result in await self._in_thread(self._take, receiver):
            if isinstance(result, TaskRecord):  # a coroutine task: this loop runs it
                result = await self._guarded(execution.arun_claimed(result), result.id)
            self._count(result)

    def _take(self, receiver) -> list[execution.Outcome | TaskRecord | None]:
        """In a slot's thread: wait (up to POP_WAIT) for a message, claim it,
        and run it if it is a sync task."""
        try:
            messages = receiver.pop()
        except Exception as error:
            raise ReceiveFailed(error) from error
        results = []
        for message in messages:
            record_id = _record_id(message)
            if record_id is None:
                continue
            try:
                results.append(execution.claim_and_run_sync(record_id, self.worker_id))
            except Exception:
                _log_failure(record_id)
        return results

    async def _take_on_loop(self, receiver) -> None:
        """Await the layer's own receive, then run each message (one hop each)."""
        for message in await self._receive(receiver):
            record_id = _record_id(message)
            if record_id is not None:
                run = execution.arun(record_id, self.worker_id)
                self._count(await self._guarded(run, record_id))

    async def _receive(self, receiver) -> list[dict]:
        """Wait for the next message; only called with a free slot."""
        waiter = asyncio.ensure_future(receiver.receive())
        self._waiting.add(waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            raise
        except Exception as error:
            raise ReceiveFailed(error) from error
        finally:
            self._waiting.discard(waiter)

    @staticmethod
    async def _guarded(run, record_id: str) -> execution.Outcome | None:
        try:
            return await run
        except Exception:
            # A broken record or database hiccup: logged, the worker goes on,
            # and the reconciler retries the record if it is still pending.
            _log_failure(record_id)
            return None

    @staticmethod
    async def _in_thread(func, *args):
        return await sync_to_async(func, thread_sensitive=False)(*args)

    def _count(self, outcome: execution.Outcome | None) -> None:
        if outcome is None or outcome.status == "skipped":
            return
        self.processed += 1
        if outcome.retry_at is not None:
            logger.info(
                "Task id=%s will retry at %s", outcome.record_id, outcome.retry_at
            )


class ReceiveFailed(Exception):
    """Waiting for a message failed (Redis down?): the slot backs off."""


def _record_id(message: dict) -> str | None:
    record_id = message.get("id")
    if message.get("type") != "task.run" or not isinstance(record_id, str):
        logger.warning("Ignoring a message that is not a task.run: %r", message)
        return None
    return record_id


def _log_failure(record_id: str) -> None:
    logger.exception("Could not run task id=%s", record_id)


def keep_database_connections() -> None:
    """Reuse each thread's database connection across tasks (checked for
    health before reuse). Only in worker processes: Django advises against
    persistent connections under ASGI, where the web process runs."""
    for alias in connections:
        connections.settings[alias]["CONN_MAX_AGE"] = None
        connections.settings[alias]["CONN_HEALTH_CHECKS"] = True
