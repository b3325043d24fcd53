"""The channel layer this project runs: channels-redis, with connection
pools that wait for a free connection instead of failing.

channels-redis makes redis-py's plain ``ConnectionPool`` for each host (100
connections), which raises ``MaxConnectionsError`` on the 101st command in
flight: a burst of a few hundred websocket handshakes in one Daphne process
(each joins a group) crashed most of them (bench/websocket.py saw 800 of
1,000 fail). A ``BlockingConnectionPool`` of the same size queues the extra
commands for a free connection (up to ``pool_timeout`` seconds) instead.
Sentinel hosts keep channels-redis' own Sentinel pool.
"""

from __future__ import annotations

from channels_redis.core import RedisChannelLayer
from redis.asyncio import BlockingConnectionPool


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
            address, max_connections=self.pool_size, timeout=self.pool_timeout, **host
        )
