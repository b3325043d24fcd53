"""What the job system knows of channels-redis' internals, in one place.

channels-redis offers only an async API whose connection pools are kept per
event loop: from sync code (a view) every send opened a new connection
(~500 sends/s), and its receive keeps an in-flight backup queue (four round
trips per message). For the stock layer on plain Redis hosts, this adapter
does the same work directly, on channels-redis' own keys and message format:

- ``send``: the layer's send (drop expired messages, refuse at capacity, add,
  refresh the key's expiry) as one Lua script, on a connection each thread
  keeps;
- ``Popper``: one blocking BZPOPMIN over every queue a worker serves;
- ``depths``: how many messages wait on each queue (ZCARD).

With several hosts, channels-redis spreads a plain channel's messages over
all of them; here a queue's wake-ups go to one host, the one its name hashes
to (the layer's own consistent hash), and a worker waits on the hosts of its
queues. (Messages the stock layer sent elsewhere are still counted; a worker
claims from the database in any case.) Sentinel hosts are left to the
layer's own API.

``usable`` says whether a layer and its channels are that case; callers use
the layer's own API otherwise (tasks.transport).
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Iterable

import redis
from channels_redis.core import RedisChannelLayer
from redis.exceptions import NoScriptError

from tasks.exceptions import TransportUnavailable

SEND_TIMEOUT = 5.0
# How long a pop waits for a message before it returns empty-handed (so a
# slot can claim from the database and see a stop), and how much longer its
# reply may take.
POP_WAIT = 1.0
POP_MARGIN = 5.0


def usable(layer, channels: Iterable[str] = ()) -> bool:
    """The stock RedisChannelLayer on plain hosts (not Sentinel), and plain
    channel names (a ``!`` name is process-local, kept by the layer in memory)."""
    return (
        isinstance(layer, RedisChannelLayer)
        and type(layer).send is RedisChannelLayer.send
        and type(layer).receive is RedisChannelLayer.receive
        and not any("master_name" in host for host in layer.hosts)
        and not any("!" in channel for channel in channels)
    )


def client(layer: RedisChannelLayer, index: int = 0, **options) -> redis.Redis:
    """A sync Redis client for the layer's host ``index``, ``options`` on top."""
    host = {**layer.hosts[index], **options}
    address = host.pop("address", None)
    return redis.Redis.from_url(address, **host) if address else redis.Redis(**host)


def host_of(layer: RedisChannelLayer, channel: str) -> int:
    """The host a queue's wake-ups go to."""
    return layer.consistent_hash(channel)


def send(layer: RedisChannelLayer, channel: str, message: dict) -> None:
    """Send as RedisChannelLayer.send would; TransportUnavailable on failure."""
    if not send_many(layer, channel, [message]):
        raise TransportUnavailable(f"Channel {channel!r} is full.")


def send_many(layer: RedisChannelLayer, channel: str, messages: list[dict]) -> int:
    """Send ``messages`` in one round trip, as many as the channel has room
    for; returns how many were added (TransportUnavailable if Redis failed)."""
    now = time.time()
    capacity = layer.get_capacity(channel)
    args = (
        layer.prefix + channel,
        int(now) - int(layer.expiry),
        capacity,
        now,
        int(layer.expiry),
        *(layer.serialize(message) for message in messages[:capacity]),
    )
    try:
        return _Script.call(layer, host_of(layer, channel), args)
    except redis.RedisError as error:
        raise TransportUnavailable(f"Channel layer error: {error}") from error


def depths(layer: RedisChannelLayer, queues: Iterable[str]) -> dict[str, int]:
    """Messages waiting on each queue's channel, on all hosts."""
    queues = list(queues)
    totals = dict.fromkeys(queues, 0)
    for index in range(len(layer.hosts)):
        with client(layer, index, socket_timeout=SEND_TIMEOUT) as connection:
            pipe = connection.pipeline(transaction=False)
            for queue in queues:
                pipe.zcard(layer.prefix + queue)
            for queue, count in zip(queues, pipe.execute(), strict=True):
                totals[queue] += count
    return totals


class Popper:
    """Waits for the next message on any of ``queues``: one BZPOPMIN on the
    host of all of them, or in turn on each of their hosts."""

    blocking = True  # pop() blocks its thread

    def __init__(self, layer: RedisChannelLayer, queues: list[str]) -> None:
        keys: dict[int, list[str]] = {}
        for queue in queues:
            keys.setdefault(host_of(layer, queue), []).append(layer.prefix + queue)
        self._hosts = [
            (client(layer, index, socket_timeout=POP_WAIT + POP_MARGIN), host_keys)
            for index, host_keys in sorted(keys.items())
        ]
        self._turn = 0
        self._layer = layer

    def pop(self, timeout: float = POP_WAIT) -> dict | None:
        """The next message, or None after about ``timeout`` seconds (blocking)."""
        share = timeout / len(self._hosts)
        for _ in self._hosts:
            self._turn = (self._turn + 1) % len(self._hosts)
            connection, keys = self._hosts[self._turn]
            popped = connection.bzpopmin(keys, timeout=max(share, 0.01))
            if popped is not None:
                _key, member, _score = popped
                return self._layer.deserialize(member)
        return None

    def close(self) -> None:
        for connection, _keys in self._hosts:
            connection.close()


class _Script:
    """RedisChannelLayer.send's four round trips as one script, for one
    message or a batch (added while the channel has room).

    Each thread keeps one connection of its own and talks to it directly:
    a redis-py pool checkout and its command layer cost more than the round
    trip itself (~230 vs ~85 us per send here).
    """

    SOURCE = """
    redis.call('ZREMRANGEBYSCORE', KEYS[1], 0, ARGV[1])
    local room = tonumber(ARGV[2]) - redis.call('ZCARD', KEYS[1])
    local added = 0
    for i = 5, #ARGV do
        if added >= room then break end
        redis.call('ZADD', KEYS[1], ARGV[3], ARGV[i])
        added = added + 1
    end
    if added > 0 then redis.call('EXPIRE', KEYS[1], ARGV[4]) end
    return added
    """
    SHA = hashlib.sha1(SOURCE.encode()).hexdigest()  # noqa: S324 (Redis' script id)
    _local = threading.local()

    @classmethod
    def call(cls, layer, index: int, args: tuple):
        """EVALSHA on this thread's connection to host ``index``, once more on
        a fresh one if the kept one broke (Redis restarted since it was opened)."""
        connection = cls._connection(layer, index)
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
            connection.send_command("EVAL", cls.SOURCE, 1, *args)
            return connection.read_response()

    @classmethod
    def _connection(cls, layer, index: int):
        """This thread's connection to one of the layer's hosts (new after a fork)."""
        key = (os.getpid(), repr(layer.hosts[index]))
        connections = cls._local.__dict__.setdefault("connections", {})
        if key not in connections:
            redis_client = client(
                layer,
                index,
                socket_timeout=SEND_TIMEOUT,
                socket_connect_timeout=SEND_TIMEOUT,
            )
            # Owned by this thread alone; connects on first use.
            connections[key] = redis_client.connection_pool.make_connection()
        return connections[key]
