"""Sending channel-layer messages from sync code without a connection per call.

``async_to_sync(channel_layer.send)`` runs each call on a new event loop, and
channels-redis keeps its connection pools per loop, so every call opened a new
Redis connection (~500 sends/s). Two ways round it:

- with one channels-redis host, a send is one Lua script on a pooled sync
  connection: the same writes as ``RedisChannelLayer.send`` (drop expired
  messages, refuse when at capacity, add, refresh expiry) in one round trip;
- otherwise, one background thread per process owns one event loop, so the
  layer's own pools, and connections, are reused.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import threading
import time
from collections.abc import Coroutine
from typing import Any

import redis
from channels.exceptions import ChannelFull
from channels.layers import get_channel_layer
from channels_redis.core import RedisChannelLayer
from redis.exceptions import NoScriptError

from tasks.exceptions import TransportUnavailable

logger = logging.getLogger(__name__)

SEND_TIMEOUT = 5.0


def send(channel: str, message: dict) -> None:
    """Send ``message`` to ``channel``; raise TransportUnavailable on failure."""
    layer = get_channel_layer()
    if _ScriptSender.usable(layer, channel):
        _ScriptSender.send(layer, channel, message)
    else:
        _run(_send(channel, message))


def layer_client(layer: RedisChannelLayer, **options) -> redis.Redis:
    """A sync Redis client for the layer's (single) host, ``options`` on top."""
    host = {**layer.hosts[0], **options}
    address = host.pop("address", None)
    return redis.Redis.from_url(address, **host) if address else redis.Redis(**host)


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


class _ScriptSender:
    """RedisChannelLayer.send's four round trips as one script (sync).

    Each thread keeps one connection of its own and talks to it directly:
    a redis-py pool checkout and its command layer cost more than the round
    trip itself (~230 vs ~85 us per send here).
    """

    SCRIPT = """
    redis.call('ZREMRANGEBYSCORE', KEYS[1], 0, ARGV[1])
    if redis.call('ZCOUNT', KEYS[1], '-inf', '+inf') >= tonumber(ARGV[2]) then
        return 0
    end
    redis.call('ZADD', KEYS[1], ARGV[3], ARGV[4])
    redis.call('EXPIRE', KEYS[1], ARGV[5])
    return 1
    """
    SHA = hashlib.sha1(SCRIPT.encode()).hexdigest()  # noqa: S324 (Redis' script id)
    _local = threading.local()

    @classmethod
    def usable(cls, layer, channel: str) -> bool:
        return (
            isinstance(layer, RedisChannelLayer)
            and type(layer).send is RedisChannelLayer.send  # not customised
            and len(layer.hosts) == 1
            and "!" not in channel
        )

    @classmethod
    def send(cls, layer, channel: str, message: dict) -> None:
        now = time.time()
        args = (
            layer.prefix + channel,
            int(now) - int(layer.expiry),
            layer.get_capacity(channel),
            now,
            layer.serialize(message),
            int(layer.expiry),
        )
        try:
            added = cls._call(layer, args)
        except redis.RedisError as error:
            raise TransportUnavailable(f"Channel layer error: {error}") from error
        if not added:
            raise TransportUnavailable(f"Channel {channel!r} is full.")

    @classmethod
    def _call(cls, layer, args: tuple):
        """EVALSHA on this thread's connection, once more on a fresh one if
        the kept one broke (Redis restarted since it was opened)."""
        connection = cls._connection(layer)
        try:
            return cls._evalsha(connection, args)
        except redis.ConnectionError:
            connection.disconnect()
            return cls._evalsha(connection, args)

    @classmethod
    def _evalsha(cls, connection, args: tuple):
        connection.send_command("EVALSHA", cls.SHA, 1, *args)
        try:
            return connection.read_response()
        except NoScriptError:  # a restarted Redis forgot it; EVAL caches it again
            connection.send_command("EVAL", cls.SCRIPT, 1, *args)
            return connection.read_response()

    @classmethod
    def _connection(cls, layer):
        """This thread's connection to the layer's host (new after a fork)."""
        key = (os.getpid(), repr(layer.hosts[0]))
        connections = cls._local.__dict__.setdefault("connections", {})
        if key not in connections:
            client = layer_client(
                layer, socket_timeout=SEND_TIMEOUT, socket_connect_timeout=SEND_TIMEOUT
            )
            # Owned by this thread alone; connects on first use.
            connections[key] = client.connection_pool.make_connection()
        return connections[key]


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
