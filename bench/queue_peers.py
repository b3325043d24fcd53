"""No-op tasks of every transport that ``bench/queue.py`` compares.

Imported by the bench process and by each kind of worker it starts: our
``runworker``, Celery (the project's app, and a bench-only app that stores
results in the database), Dramatiq and a bare stock Channels worker. Nothing
here touches Django, a broker or Dramatiq at import time: each object but the
plain Celery shared task is built on first access (module ``__getattr__``),
so a Dramatiq worker never needs Django and a Celery worker never builds a
Dramatiq broker.

Every no-op takes an optional ``sent`` (``time.time()`` at enqueue) and
``mark``: with ``sent`` it pushes ``start - sent`` (seconds) to the Redis list
``LATENCY_KEY``; with ``mark`` it stores its finish time at ``DONE_KEY`` (the
bench sends one marked task last, after the no-ops it counts). Plain no-ops
(the throughput runs) touch nothing.

Configuration comes from the environment the bench gives its workers:
``REDIS_URL`` (all) and ``BENCH_CELERY_RESULT_BACKEND`` (the Celery app with
database results, e.g. ``db+sqlite:////tmp/x/bench.sqlite3``).
"""

from __future__ import annotations

import logging
import os
import time
from functools import cache

from celery import shared_task

LATENCY_KEY = "bench:latency"
DONE_KEY = "bench:done"
RAW_CHANNEL = "bench-raw"
DB_CELERY_QUEUE = "bench_db"
# The slow-backlog scenario's task: a nap of this many seconds.
NAP_SECONDS = 0.3

logger = logging.getLogger("bench.queue_peers")


@cache
def redis_client():
    import redis

    return redis.Redis.from_url(os.environ["REDIS_URL"])


def record(sent: float | None, mark: bool) -> None:
    """What every peer no-op does with its optional arguments."""
    if sent is not None:
        redis_client().rpush(LATENCY_KEY, time.time() - sent)
    if mark:
        redis_client().set(DONE_KEY, time.time())


# --- Django tasks (our backends) ---------------------------------------------


def _django_task(name: str, backend: str, seconds: float = 0.0):
    """A module-level ``@task`` named ``name`` (its module_path is
    ``bench.queue_peers.<name>``, which the workers import) that sleeps
    ``seconds`` (0: a no-op)."""
    from django.tasks import task

    def noop() -> None:
        if seconds:
            time.sleep(seconds)

    noop.__name__ = noop.__qualname__ = name
    noop.__module__ = __name__
    return task(queue_name="default", backend=backend)(noop)


# --- Celery -------------------------------------------------------------------


# What a user would otherwise write. Defined at import (Celery registers a
# shared task with every app, so the project's worker, started with
# ``-I bench.queue_peers``, knows it); creating it touches no broker.
@shared_task(name="bench.plain_noop", ignore_result=True)
def plain_noop(sent: float | None = None, mark: bool = False) -> None:
    record(sent, mark)


def _celery_db_app():
    """A bench-only Celery app like the project's (Redis broker, acks late,
    prefetch 1, JSON) whose tasks store their result (status) in a database
    through Celery's SQLAlchemy backend."""
    from celery import Celery

    app = Celery("bench_db", set_as_current=False)
    app.conf.update(
        broker_url=os.environ["REDIS_URL"],
        result_backend=os.environ["BENCH_CELERY_RESULT_BACKEND"],
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_default_queue=DB_CELERY_QUEUE,
        broker_connection_retry_on_startup=True,
    )

    @app.task(name="bench.db_noop", ignore_result=False)
    def db_noop(sent: float | None = None, mark: bool = False) -> None:
        record(sent, mark)

    return app


# --- Dramatiq ------------------------------------------------------------------


def _dramatiq_broker():
    import dramatiq
    from dramatiq.brokers.redis import RedisBroker

    broker = RedisBroker(url=os.environ["REDIS_URL"])
    dramatiq.set_broker(broker)

    @dramatiq.actor(actor_name="bench_noop", queue_name="bench", broker=broker)
    def dramatiq_noop(sent: float | None = None, mark: bool = False) -> None:
        record(sent, mark)

    broker.bench_noop = dramatiq_noop
    return broker


# --- Stock Channels worker with a bare consumer ----------------------------------


def run_stock_worker() -> None:
    """What channels' stock ``runworker bench-raw`` does (its Command.handle),
    with a ChannelNameRouter to a bare AsyncConsumer: the ceiling of Channels."""
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
    django.setup()
    from channels.consumer import AsyncConsumer
    from channels.layers import get_channel_layer
    from channels.routing import ChannelNameRouter
    from channels.worker import Worker

    class BareConsumer(AsyncConsumer):
        async def bench_noop(self, message: dict) -> None:
            if "sent" in message or "mark" in message:
                record(message.get("sent"), message.get("mark", False))

    application = ChannelNameRouter({RAW_CHANNEL: BareConsumer.as_asgi()})
    logger.info("Stock Channels worker listening on %s", RAW_CHANNEL)
    Worker(
        application=application,
        channels=[RAW_CHANNEL],
        channel_layer=get_channel_layer(),
    ).run()


_FACTORIES = {
    "noop": lambda: _django_task("noop", "default"),
    "guaranteed_noop": lambda: _django_task("guaranteed_noop", "guaranteed"),
    "nap": lambda: _django_task("nap", "default", seconds=NAP_SECONDS),
    "db_celery_app": _celery_db_app,
    "dramatiq_broker": _dramatiq_broker,
}
_built: dict = {}


def __getattr__(name: str):
    if name not in _FACTORIES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if name not in _built:
        _built[name] = _FACTORIES[name]()
    return _built[name]
