"""Sending channel-layer messages from sync code without a connection per call.

``async_to_sync(channel_layer.send)`` runs each call on a new event loop, and
channels-redis keeps its connection pools per loop, so every call opened a new
Redis connection (~500 sends/s). Here one background thread per process owns
one event loop, so the layer's pools, and its connections, are reused.
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

from tasks.exceptions import TransportUnavailable

logger = logging.getLogger(__name__)

SEND_TIMEOUT = 5.0


def send(channel: str, message: dict) -> None:
    """Send ``message`` to ``channel``; raise TransportUnavailable on failure."""
    _run(_send(channel, message))


def group_send(group: str, message: dict) -> None:
    """Send to a group; a failure is logged, never raised (events are best-effort)."""
    try:
        _run(get_channel_layer().group_send(group, message))
    except Exception:
        logger.warning("Could not publish to group %s", group, exc_info=True)


async def asend(channel: str, message: dict) -> None:
    """The async twin of send(), for code already on an event loop."""
    await _send(channel, message)


async def _send(channel: str, message: dict) -> None:
    try:
        await get_channel_layer().send(channel, message)
    except ChannelFull as error:
        raise TransportUnavailable(f"Channel {channel!r} is full.") from error
    except (TimeoutError, OSError, ConnectionError) as error:
        raise TransportUnavailable(f"Channel layer unreachable: {error}") from error
    except Exception as error:
        if type(error).__module__.startswith("redis"):
            raise TransportUnavailable(f"Channel layer error: {error}") from error
        raise


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
