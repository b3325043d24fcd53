"""What /healthz answers: can this deployment do its work now?

One check per dependency (the database, Redis, the channel layer's hosts,
Celery's broker), each a single round trip with a short timeout, and the
backlog of each queue. The answer is kept for a second, so a load balancer
polling every second costs one round of checks per process.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from celery import current_app
from channels.layers import get_channel_layer
from django.db import connection
from django.utils import timezone

from tasks import redis_client, redis_layer
from tasks.models import TaskRecord

CHECK_TIMEOUT = 2.0
KEEP_FOR = 1.0

_last: tuple[float, dict] | None = None
_lock = threading.Lock()


def report() -> dict:
    """{"ok": bool, "failing": [names], "checks": {name: {"ok", "ms",
    "error"?}}, "queues": [...]}"""
    global _last
    with _lock:
        if _last is not None and time.monotonic() - _last[0] < KEEP_FOR:
            return _last[1]
        checks = {name: _timed(check) for name, check in CHECKS.items()}
        failing = [name for name, check in checks.items() if not check["ok"]]
        answer = {
            "ok": not failing,
            "failing": failing,
            "checks": checks,
            "queues": _queues(checks["database"]["ok"]),
        }
        _last = (time.monotonic(), answer)
        return answer


def _database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


def _redis() -> None:
    redis_client.client(CHECK_TIMEOUT).ping()


def _channel_layer() -> None:
    layer = get_channel_layer()
    if layer is None:
        raise RuntimeError("no channel layer is configured")
    for host in range(len(getattr(layer, "hosts", ()))):
        redis_layer.client(layer, host, socket_timeout=CHECK_TIMEOUT).ping()


def _celery_broker() -> None:
    """The broker of the project's Celery app (the one its package loads, as
    Celery's Django guide has it)."""
    with current_app.connection_for_write() as broker:
        broker.ensure_connection(max_retries=1, timeout=CHECK_TIMEOUT)


CHECKS: dict[str, Callable[[], None]] = {
    "database": _database,
    "redis": _redis,
    "channel_layer": _channel_layer,
    "celery_broker": _celery_broker,
}


def _timed(check: Callable[[], None]) -> dict:
    start = time.perf_counter()
    try:
        check()
    except Exception as error:
        result = {"ok": False, "error": f"{type(error).__name__}: {error}"[:300]}
    else:
        result = {"ok": True}
    result["ms"] = round((time.perf_counter() - start) * 1000, 2)
    return result


def _queues(database_ok: bool) -> list[dict]:
    if not database_ok:
        return []
    now = timezone.now()
    return [
        {
            "queue": row["queue_name"],
            "backend": row["backend"],
            "waiting": row["count"],
            "oldest_seconds": round((now - row["oldest"]).total_seconds(), 3),
        }
        for row in TaskRecord.objects.backlog(now)
    ]
