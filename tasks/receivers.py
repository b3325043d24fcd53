"""How a worker slot waits for its next message.

``DirectReceiver`` pops straight from the channels-redis keys: one blocking
BZPOPMIN over every queue (one round trip per message, fair across queues).
It skips channels-redis' in-flight backup queue (four round trips per
message): the durable record makes that unnecessary, since a message lost
with a killed worker is re-sent by the reconciler and a duplicate is refused
by the claim. Any other layer is read through its own ``receive``.
"""

from __future__ import annotations

import asyncio

from channels_redis.core import RedisChannelLayer

from tasks.transport import layer_client

# How long a pop waits for a message before it returns empty-handed (so a
# slot's thread can see a stop), and how much longer its reply may take.
POP_WAIT = 1.0
POP_MARGIN = 5.0


def receiver_for(layer, queues: list[str]):
    if DirectReceiver.usable(layer, queues):
        return DirectReceiver(layer, queues)
    return LayerReceiver(layer, queues)


class DirectReceiver:
    """Pops from a slot's own thread (``pop``): one thread hop per task, the
    wait included, instead of an await on the loop and then a hop to run it."""

    blocking = True

    def __init__(self, layer: RedisChannelLayer, queues: list[str]) -> None:
        self._client = layer_client(layer, socket_timeout=POP_WAIT + POP_MARGIN)
        self._keys = [layer.prefix + queue for queue in queues]
        self._layer = layer

    @staticmethod
    def usable(layer, queues: list[str]) -> bool:
        return (
            isinstance(layer, RedisChannelLayer)
            and type(layer).receive is RedisChannelLayer.receive  # not customised
            and len(layer.hosts) == 1
            and not any("!" in queue for queue in queues)
        )

    def pop(self) -> list[dict]:
        """At most one message, waiting up to POP_WAIT seconds (blocking)."""
        popped = self._client.bzpopmin(self._keys, timeout=POP_WAIT)
        if popped is None:
            return []
        _key, member, _score = popped
        return [self._layer.deserialize(member)]

    async def close(self) -> None:
        self._client.close()


class LayerReceiver:
    """The layer's own receive, raced across queues."""

    blocking = False

    def __init__(self, layer, queues: list[str]) -> None:
        self._layer = layer
        self._queues = queues

    async def receive(self) -> list[dict]:
        waiters = [asyncio.ensure_future(self._layer.receive(q)) for q in self._queues]
        try:
            done, pending = await asyncio.wait(
                waiters, return_when=asyncio.FIRST_COMPLETED
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

    async def close(self) -> None:
        pass
