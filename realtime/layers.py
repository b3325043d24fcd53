"""The channel layer this project runs: channels-redis, with connection
pools that wait for a free connection instead of failing.

channels-redis makes redis-py's plain ``ConnectionPool`` for each host (100
connections), which raises ``MaxConnectionsError`` on the 101st command in
flight: a burst of a few hundred websocket handshakes in one Daphne process
(each joins a group) crashed most of them (bench/websocket.py saw 800 of
1,000 fail). A ``BlockingConnectionPool`` of the same size queues the extra
commands for a free connection (up to ``pool_timeout`` seconds) instead.
Sentinel hosts keep channels-redis' own Sentinel pool.

The pools also try a command once more on a fresh connection when its
connection fails: a pool keeps connections that Redis may have closed since
(a restart, a client kill), and redis-py's default is not to retry, so the
first command after one failed (an event lost, a group join refused). Should
the first attempt have run after all, clients drop the repeated event by its
sequence number.
"""

from __future__ import annotations

from channels_redis.core import RedisChannelLayer
from redis.asyncio import BlockingConnectionPool
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff


class PooledRedisChannelLayer(RedisChannelLayer):
    def __init__(self, *args, pool_size: int = 100, pool_timeout: float = 20.0, **kw):
        super().__init__(*args, **kw)
        self.pool_size = pool_size
        self.pool_timeout = pool_timeout

    def create_pool(self, index: int):
        host = dict(self.hosts[index])
        address = host.pop("address", None)
        if address is None:  # Sentinel
            return super().create_pool(index)
        return BlockingConnectionPool.from_url(
            address,
            max_connections=self.pool_size,
            timeout=self.pool_timeout,
            retry=Retry(NoBackoff(), retries=1),
            **host,
        )
