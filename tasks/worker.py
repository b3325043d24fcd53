"""The queue worker behind ``manage.py runworker``.

Unlike the stock Channels worker, which drains a channel into an unbounded
in-memory queue (one process hoards, a crash loses the buffer, a handler that
raises drops everything behind it), this worker takes a message only when it
has a free slot: a process holds at most ``concurrency`` messages.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import uuid

from channels.layers import get_channel_layer
from django.db import connections

from tasks import execution
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
        """Take no new messages; running tasks finish."""
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
        delay = BACKOFF_START
        while not self._stopping:
            try:
                messages = await self._receive(receiver)
            except asyncio.CancelledError:
                if self._stopping:
                    return
                raise
            except Exception as error:
                logger.warning("Receive failed (%s); retrying in %.1f s", error, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, BACKOFF_CAP)
                continue
            delay = BACKOFF_START
            for message in messages:
                await self._handle(message)

    async def _receive(self, receiver) -> list[dict]:
        """Wait for the next message; only called with a free slot."""
        waiter = asyncio.ensure_future(receiver.receive())
        self._waiting.add(waiter)
        try:
            return await waiter
        finally:
            self._waiting.discard(waiter)

    async def _handle(self, message: dict) -> None:
        record_id = message.get("id")
        if message.get("type") != "task.run" or not isinstance(record_id, str):
            logger.warning("Ignoring a message that is not a task.run: %r", message)
            return
        try:
            outcome = await execution.arun(record_id, self.worker_id)
        except Exception:
            # A broken record or database hiccup: logged, the worker goes on,
            # and the reconciler retries the record if it is still pending.
            logger.exception("Could not run task id=%s", record_id)
            return
        if outcome.status != "skipped":
            self.processed += 1
        if outcome.retry_at is not None:
            logger.info("Task id=%s will retry at %s", record_id, outcome.retry_at)


def keep_database_connections() -> None:
    """Reuse each thread's database connection across tasks (checked for
    health before reuse). Only in worker processes: Django advises against
    persistent connections under ASGI, where the web process runs."""
    for alias in connections:
        connections.settings[alias]["CONN_MAX_AGE"] = None
        connections.settings[alias]["CONN_HEALTH_CHECKS"] = True
