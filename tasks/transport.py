"""The job system's use of the channel layer: wake-ups and group events.

A wake-up ("doorbell") is ``{"type": "task.run", "id": ...}`` on the channel
named by the task's queue. It only wakes a free worker slot, which then claims
the most urgent due record from the database: a doorbell that expired,
overflowed or died with Redis costs at most one pop timeout of latency.

With the stock channels-redis layer on one host, sends, pops and depths go
through tasks.redis_layer (no event loop, kept connections). Any other layer is
used through its own async API: sync callers run it on one background event
loop per process, so the layer's connection pools are reused instead of one
connection opened per call (``async_to_sync`` makes a new loop each time).
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Coroutine
from typing import Any

from channels.exceptions import ChannelFull
from channels.layers import get_channel_layer

from tasks import outage, redis_layer
from tasks.exceptions import TransportUnavailable

logger = logging.getLogger(__name__)

SEND_TIMEOUT = redis_layer.SEND_TIMEOUT
POP_WAIT = redis_layer.POP_WAIT


def doorbell(record_id: str) -> dict:
    """The wake-up message: small, never the arguments (they are in the record)."""
    return {"type": "task.run", "id": record_id}


def send(channel: str, message: dict) -> None:
    """Send ``message`` to ``channel``; raise TransportUnavailable on failure."""
    layer = get_channel_layer()
    if redis_layer.usable(layer, [channel]):
        redis_layer.send(layer, channel, message)
    else:
        _run(_send(layer, channel, message))


def send_many(channel: str, messages: list[dict]) -> int:
    """Send ``messages`` to ``channel`` in one round trip where the layer
    allows, as many as it has room for; returns how many were sent (raise
    TransportUnavailable when the layer failed)."""
    layer = get_channel_layer()
    if redis_layer.usable(layer, [channel]):
        return redis_layer.send_many(layer, channel, messages)
    return _run(_send_while_room(layer, channel, messages))


def group_send(group: str, message: dict) -> None:
    """Send to a group; a failure is logged, never raised (events are best-effort)."""
    try:
        _run(get_channel_layer().group_send(group, message))
    except Exception as error:
        # An outage is logged once, not per event.
        if not outage.absorb_redis_outage(error):
            logger.warning("Could not publish to group %s", group, exc_info=True)
    else:
        outage.redis.answered()


def depths(queues: list[str]) -> dict[str, int]:
    """Wake-ups waiting on each queue's channel ({} when the layer cannot say)."""
    layer = get_channel_layer()
    if not redis_layer.usable(layer, queues):
        return {}
    try:
        return redis_layer.depths(layer, queues)
    except Exception:
        logger.warning("Could not read queue depths", exc_info=True)
        return {}


def waiter_for(queues: list[str]):
    """How a worker slot waits for a wake-up on ``queues``: a blocking pop in
    its own thread (``Popper``), or the layer's own receive on the loop."""
    layer = get_channel_layer()
    if redis_layer.usable(layer, queues):
        return redis_layer.Popper(layer, queues)
    return LayerWaiter(layer, queues)


class LayerWaiter:
    """The layer's own receive, raced across queues, for at most POP_WAIT."""

    blocking = False

    def __init__(self, layer, queues: list[str]) -> None:
        self._layer = layer
        self._queues = queues

    async def wait(self) -> list[dict]:
        waiters = [asyncio.ensure_future(self._layer.receive(q)) for q in self._queues]
        try:
            done, pending = await asyncio.wait(
                waiters, timeout=POP_WAIT, return_when=asyncio.FIRST_COMPLETED
            )
        except asyncio.CancelledError:
            for waiter in waiters:
                waiter.cancel()
            raise
        for waiter in pending:
            # channels-redis keeps a popped message in its backup queue and
            # restores it on the next receive of that channel.
            waiter.cancel()
        return [waiter.result() for waiter in done if not waiter.cancelled()]

    def close(self) -> None:
        pass


async def _send(layer, channel: str, message: dict) -> None:
    try:
        await layer.send(channel, message)
    except ChannelFull as error:
        raise TransportUnavailable(f"Channel {channel!r} is full.") from error
    except (TimeoutError, OSError, ConnectionError) as error:
        raise TransportUnavailable(f"Channel layer unreachable: {error}") from error
    except Exception as error:
        if type(error).__module__.startswith("redis"):
            raise TransportUnavailable(f"Channel layer error: {error}") from error
        raise


async def _send_while_room(layer, channel: str, messages: list[dict]) -> int:
    sent = 0
    for message in messages:
        try:
            await _send(layer, channel, message)
        except TransportUnavailable:
            if sent:
                break  # the channel is full: the rest are claimed all the same
            raise
        sent += 1
    return sent


def release(layer) -> None:
    """Close the connections this process' layer thread holds for ``layer``,
    a layer instance being replaced (by a test's own, or new settings)."""
    if not _LoopThread.running() or not hasattr(layer, "close_pools"):
        return
    try:
        _run(layer.close_pools())
    except Exception as error:  # Redis gone meanwhile: nothing left to close
        logger.debug("Could not close a replaced layer's connections: %s", error)


def _run(coroutine: Coroutine) -> Any:
    """Run on the layer thread's loop and wait (never this thread's own loop,
    so waiting cannot deadlock)."""
    future = asyncio.run_coroutine_threadsafe(coroutine, _LoopThread.get())
    try:
        return future.result(SEND_TIMEOUT)
    except TimeoutError as error:
        future.cancel()
        raise TransportUnavailable("Channel layer did not answer in time.") from error


class _LoopThread:
    """One daemon thread running an event loop, per process (fork-safe)."""

    _lock = threading.Lock()
    _loop: asyncio.AbstractEventLoop | None = None
    _pid: int | None = None

    @classmethod
    def running(cls) -> bool:
        """Whether this process has started its layer thread."""
        return cls._loop is not None and cls._pid == os.getpid()

    @classmethod
    def get(cls) -> asyncio.AbstractEventLoop:
        with cls._lock:
            if cls._loop is None or cls._pid != os.getpid():
                cls._loop = asyncio.new_event_loop()
                cls._pid = os.getpid()
                thread = threading.Thread(
                    target=cls._loop.run_forever, name="channel-layer", daemon=True
                )
                thread.start()
            return cls._loop
