"""/healthz and /metrics against this session's Redis, database and a real
worker: what a load balancer and Prometheus would see."""

import re

import pytest
from django.test import Client

from tasks import health
from tests import tasks
from tests.support import wait_finished, wait_for

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("redis_server"),
]


@pytest.fixture(autouse=True)
def _fresh_health():
    health._last = None  # the answer is kept a second
    yield
    health._last = None


def test_healthz_checks_every_dependency_and_shows_the_backlog():
    tasks.add.using(queue_name="thumbnailer").enqueue(1, 2)  # no worker: waits

    response = Client().get("/healthz")

    assert response.status_code == 200
    body = response.json()
    assert body["ok"] is True
    assert set(body["checks"]) == {
        "database",
        "redis",
        "channel_layer",
        "celery_broker",
    }
    assert all(check["ok"] for check in body["checks"].values())
    [queue] = body["queues"]
    assert (queue["queue"], queue["backend"], queue["waiting"]) == (
        "thumbnailer",
        "default",
        1,
    )


def test_healthz_is_503_when_redis_is_down(redis_server):
    redis_server.stop()
    try:
        response = Client().get("/healthz")
    finally:
        redis_server.start()
    assert response.status_code == 503
    body = response.json()
    assert body["ok"] is False
    assert body["checks"]["redis"]["ok"] is False
    assert "Error" in body["checks"]["redis"]["error"]
    assert body["checks"]["database"]["ok"] is True


@pytest.fixture
def scrape(settings):
    """GET /metrics as Prometheus would (tests run with DEBUG off: a token)."""
    settings.METRICS_TOKEN = "test-token"

    def get() -> str:
        response = Client().get(
            "/metrics", headers={"Authorization": "Bearer test-token"}
        )
        assert response.status_code == 200
        return response.content.decode()

    return get


def metric(text: str, name: str, **labels) -> float:
    """The value of one sample in Prometheus' text format (0 if absent)."""
    wanted = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
    for line in text.splitlines():
        match = re.match(rf"{name}(?:\{{(.*)\}})? (\S+)$", line)
        if match and ",".join(sorted((match.group(1) or "").split(","))) == wanted:
            return float(match.group(2))
    return 0.0


def test_metrics_count_what_worker_processes_did(worker, scrape):
    # Given the counts before
    before = scrape()
    labels = {"queue": "default", "task": "tests.tasks.add", "backend": "default"}
    # When a worker process runs two tasks, one of them failing
    worker("default")
    wait_finished(tasks.add.enqueue(1, 2))
    wait_finished(tasks.explode.enqueue("boom"))
    # Then /metrics (this process) counts what the worker process did
    after = scrape()
    assert metric(after, "tasks_started_total", **labels) == (
        metric(before, "tasks_started_total", **labels) + 1
    )
    assert metric(after, "tasks_enqueued_total", **labels) >= 1
    failed = {**labels, "task": "tests.tasks.explode"}
    assert metric(after, "tasks_failed_total", **failed) == (
        metric(before, "tasks_failed_total", **failed) + 1
    )
    assert metric(after, "tasks_duration_seconds_count", **labels) >= 1
    assert "tasks_wait_seconds_bucket" in after
    # And the live worker process, from the registry
    assert metric(after, "tasks_workers") >= 1
    assert "tasks_worker_heartbeat_age_seconds{worker=" in after


def test_metrics_show_waiting_tasks_and_the_oldest_age(scrape):
    for _ in range(3):
        tasks.add.using(queue_name="thumbnailer").enqueue(1, 1)
    text = scrape()
    queue = {"queue": "thumbnailer", "backend": "default"}
    assert metric(text, "tasks_queue_depth", **queue) == 3
    assert metric(text, "tasks_oldest_ready_age_seconds", **queue) >= 0
    assert "# TYPE tasks_queue_depth gauge" in text


def test_metrics_need_the_token_outside_debug(settings):
    settings.DEBUG = False
    settings.ALLOWED_HOSTS = ["testserver"]
    settings.METRICS_TOKEN = ""
    assert Client().get("/metrics").status_code == 404
    settings.METRICS_TOKEN = "s3cret-token"
    assert Client().get("/metrics").status_code == 401
    wrong = Client().get("/metrics", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    right = Client().get("/metrics", headers={"Authorization": "Bearer s3cret-token"})
    assert right.status_code == 200
    assert right["Content-Type"].startswith("text/plain; version=")


def test_a_websocket_counts_while_it_is_open(scrape):
    # The gauge lives in the process that serves the socket (here: this one).
    from asgiref.sync import async_to_sync, sync_to_async
    from channels.testing import WebsocketCommunicator

    from project.asgi import application

    def count() -> float:
        return metric(scrape(), "websocket_connections")

    async def count_while_open() -> float:
        communicator = WebsocketCommunicator(
            application, "/chat/", headers=[(b"origin", b"http://127.0.0.1")]
        )
        connected, _ = await communicator.connect()
        assert connected
        during = await sync_to_async(count)()
        await communicator.disconnect()
        return during

    before = count()
    assert async_to_sync(count_while_open)() == before + 1
    wait_for(lambda: count() == before, timeout=5, message="the count to drop")
