"""The job system's own Redis (the REDIS_URL setting): the worker registry,
the reconciler's lock and the health check share its clients.

Channel-layer traffic goes through the layer's own hosts (tasks.transport).
"""

from __future__ import annotations

import functools

import redis

from tasks import conf


def client(timeout: float) -> redis.Redis:
    """A client of the job system's Redis whose commands fail after
    ``timeout`` seconds; one (with its connection pool) per URL and timeout."""
    return _client(conf.get("REDIS_URL"), timeout)


@functools.cache
def _client(url: str, timeout: float) -> redis.Redis:
    return redis.Redis.from_url(
        url, socket_timeout=timeout, socket_connect_timeout=timeout
    )
