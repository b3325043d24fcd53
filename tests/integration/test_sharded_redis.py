"""More than one Redis: the channel layer shards the queues over two real
servers, every fast path follows, and losing one server loses no task."""

import pytest
from channels.layers import channel_layers
from django.tasks import TaskResultStatus
from django.utils.module_loading import import_string
from redis.asyncio.sentinel import SentinelConnectionPool

from project.redis_server import RedisServer, free_port
from project.settings import channel_layers_for
from tasks import redis_layer, transport
from tests import tasks
from tests.support import wait_finished

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

# With two hosts, channels-redis' hash puts "default" on the first and
# "thumbnailer" on the second.
QUEUES = ("default", "thumbnailer")


@pytest.fixture
def two_hosts(redis_server, settings, tmp_path):
    second = RedisServer(tmp_path / "redis-2", port=free_port())
    second.start()
    urls = [redis_server.url, second.url]
    settings.CHANNEL_LAYERS = channel_layers_for(urls)
    channel_layers.backends = {}
    yield second, urls
    second.stop()
    channel_layers.backends = {}


def test_each_queue_has_its_host_and_the_paths_follow(two_hosts):
    layer = channel_layers["default"]
    assert [redis_layer.host_of(layer, queue) for queue in QUEUES] == [0, 1]
    # Wake-ups of each queue go to its host, and the depths add them up
    for queue in QUEUES:
        tasks.add.using(queue_name=queue).enqueue(1, 1)
    assert transport.depths(list(QUEUES)) == {"default": 1, "thumbnailer": 1}
    for index, queue in enumerate(QUEUES):
        with redis_layer.client(layer, index) as host:
            assert host.zcard(layer.prefix + queue) == 1


def on_both_queues(count: int) -> list:
    return [
        tasks.add.using(queue_name=q).enqueue(n, 1)
        for n in range(count)
        for q in QUEUES
    ]


def test_tasks_of_every_queue_complete_and_a_lost_host_loses_none(worker, two_hosts):
    # Given a worker on both queues, across the two hosts
    second, urls = two_hosts
    process = worker(*QUEUES, CHANNEL_LAYER_HOSTS=",".join(urls))
    first = [
        tasks.add.using(queue_name=q).enqueue(n, 1) for n in range(5) for q in QUEUES
    ]
    assert {wait_finished(r).status for r in first} == {TaskResultStatus.SUCCESSFUL}
    # When the second Redis dies (the thumbnailer queue's host)
    second.stop()
    later = [
        tasks.add.using(queue_name=q).enqueue(n, 2) for n in range(5) for q in QUEUES
    ]
    # Then every task still runs: the records decide, not the wake-ups
    for result in later:
        assert wait_finished(result, timeout=60).status == TaskResultStatus.SUCCESSFUL
    assert process.alive()


def test_sentinel_settings_make_a_layer_that_uses_sentinel():
    config = channel_layers_for(
        [], sentinels=["127.0.0.1:26379", "10.0.0.2:26379"], sentinel_master="main"
    )["default"]
    layer = import_string(config["BACKEND"])(**config["CONFIG"])
    [host] = layer.hosts
    assert host["master_name"] == "main"
    assert host["sentinels"] == [("127.0.0.1", 26379), ("10.0.0.2", 26379)]
    assert isinstance(layer.create_pool(0), SentinelConnectionPool)
    # The fast paths step aside: the layer's own API talks to Sentinel
    assert not redis_layer.usable(layer, ["default"])
