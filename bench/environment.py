"""What every job-system benchmark stands on: a temp folder, a Redis (and,
when asked, a PostgreSQL) of its own on loopback, and Django configured on
them with the project's default settings and migrated. Everything started
is stopped, by PID, when the block ends."""

import logging
import os
import secrets
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from project.redis_server import RedisServer, free_port
from tests.postgres_server import PostgresServer

VENV_BIN = Path(sys.executable).parent


@dataclass(frozen=True)
class Prepared:
    tmp: Path  # the bench's folder; its "logs" folder is for process logs
    redis_url: str
    env: dict  # the environment of the bench and of the processes it starts


@contextmanager
def prepared(name: str, database: str = "sqlite") -> Iterator[Prepared]:
    """Set up logging, servers and Django for the bench ``name``."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    tmp = Path(tempfile.mkdtemp(prefix=f"bench-{name}-"))
    (tmp / "logs").mkdir()
    redis = RedisServer(tmp / "redis", port=free_port())
    postgres = (
        PostgresServer(free_port(), fast=False) if database == "postgres" else None
    )
    try:
        redis.start()
        if postgres is not None:
            postgres.start()
        env = configure(tmp, redis.url, postgres.url if postgres else "")
        yield Prepared(tmp, redis.url, env)
    finally:
        redis.stop()
        if postgres is not None:
            postgres.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def configure(tmp: Path, redis_url: str, database_url: str = "") -> dict:
    """The environment of the bench and its workers; sets up Django here.
    The records go to SQLite in ``tmp`` unless ``database_url`` is given."""
    database = tmp / "bench.sqlite3"
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="project.settings",
        DJANGO_DEBUG="0",
        DJANGO_SECRET_KEY=secrets.token_urlsafe(50),
        DJANGO_VAR_DIR=str(tmp / "var"),
        DJANGO_MEDIA_ROOT=str(tmp / "media"),
        DJANGO_LOG_LEVEL=os.environ.get("DJANGO_LOG_LEVEL", "INFO"),
        DATABASE_URL=database_url or f"sqlite:///{database}",
        REDIS_URL=redis_url,
        CELERY_BROKER_URL=redis_url,
        BENCH_CELERY_RESULT_BACKEND=f"db+sqlite:///{database}",
        PATH=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        PYTHONUNBUFFERED="1",
    )
    os.environ.update(env)

    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)
    return env
