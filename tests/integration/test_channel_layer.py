"""The project's channel layer on a real Redis: bursts wait for a pooled
connection instead of failing (realtime.layers)."""

import asyncio

import pytest
from django.conf import settings
from django.utils.module_loading import import_string

from realtime.layers import PooledRedisChannelLayer

pytestmark = pytest.mark.usefixtures("redis_server")


def a_layer(**config) -> PooledRedisChannelLayer:
    project = settings.CHANNEL_LAYERS["default"]
    return import_string(project["BACKEND"])(**{**project["CONFIG"], **config})


async def test_a_burst_of_commands_beyond_the_pool_waits_for_connections():
    # Given a layer with room for 2 connections
    layer = a_layer(pool_size=2)
    channels = [await layer.new_channel() for _ in range(200)]
    # When 200 sockets join a group at once, as in a burst of handshakes
    await asyncio.gather(*(layer.group_add("burst", c) for c in channels))
    # Then every join went through, and no more than 2 connections were used
    connection = layer.connection(layer.consistent_hash("burst"))
    assert await connection.zcard(layer._group_key("burst")) == 200
    assert connection.connection_pool.max_connections == 2
    await asyncio.gather(*(layer.group_discard("burst", c) for c in channels))
    await layer.close_pools()
