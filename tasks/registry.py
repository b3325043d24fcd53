"""Which worker processes are alive, for /metrics and tasks_status.

Each runworker process writes its id and the time to a Redis hash every
heartbeat interval (idle or busy), and removes itself when it stops; a
process not heard from for TASKS_STALE_AFTER_SECONDS is not alive. (Running
tasks have heartbeats of their own on their records; this one is the
process's.)
"""

from __future__ import annotations

import time

import redis

from tasks import conf, redis_client

KEY = "tasks:workers"


def beat(worker_id: str) -> None:
    _client().hset(KEY, worker_id, time.time())


def leave(worker_id: str) -> None:
    _client().hdel(KEY, worker_id)


def alive() -> dict[str, float]:
    """Live worker ids and the seconds since each reported; forgets the dead."""
    now, stale = time.time(), conf.get("TASKS_STALE_AFTER_SECONDS")
    client = _client()
    ages = {
        worker.decode(): now - float(seen)
        for worker, seen in client.hgetall(KEY).items()
    }
    dead = [worker for worker, age in ages.items() if age > stale]
    if dead:
        client.hdel(KEY, *dead)
    return {worker: age for worker, age in ages.items() if age <= stale}


def _client() -> redis.Redis:
    return redis_client.client(timeout=2.0)
