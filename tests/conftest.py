"""Session fixtures: a real Redis, real worker and web processes, a real browser.

Every server here is started by this session on 127.0.0.1 (a free port) and
stopped by its PID in teardown; nothing else is flushed or killed.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from django.conf import settings

from project.redis_server import RedisServer, free_port
from project.settings import celery_url_for, channel_layers_for
from tests.postgres_server import PostgresServer
from tests.support import (
    VENV_BIN,
    ManagedProcess,
    celery_worker_argv,
    procfile_command,
    runworker_argv,
    start_daphne,
)

CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory) -> Iterator[RedisServer]:
    """A Redis server of this session's own, wired into this process' settings."""
    server = RedisServer(tmp_path_factory.mktemp("redis"), port=free_port())
    server.start()
    _use_redis(server.url)
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _fresh_redis(request):
    """Each test that uses this session's Redis starts with it empty (no
    messages left over from the previous test), but for tests whose workers
    outlive them (marked shared_workers)."""
    shared = request.node.get_closest_marker("shared_workers") is not None
    if "redis_server" in request.fixturenames and not shared:
        server = request.getfixturevalue("redis_server")
        redis.Redis.from_url(server.url).flushall()


@pytest.fixture(autouse=True)
def _own_channel_layer():
    """Each test gets channel-layer instances of its own. channels-redis keeps
    asyncio locks (per channel, and for receiving) and per-loop connection
    pools on the instance; each async test runs on an event loop of its own,
    and a lock first waited on under one test's loop fails under the next
    one's ("... is bound to a different event loop"). The connections a
    test's layer opened on the job system's layer thread (which outlives
    tests, as it outlives requests in a server) are closed after it."""
    from channels.layers import channel_layers

    from tasks import transport

    channel_layers.backends = {}
    yield
    for layer in channel_layers.backends.values():
        transport.release(layer)
    channel_layers.backends = {}


def _use_redis(url: str) -> None:
    from channels.layers import channel_layers

    settings.REDIS_URL = url
    settings.CHANNEL_LAYERS = channel_layers_for(url)
    settings.CELERY_BROKER_URL = celery_url_for(url)
    channel_layers.backends = {}


# `make test-postgres`: the whole suite on a PostgreSQL server of its own.
ON_POSTGRES = os.environ.get("TEST_DATABASE") == "postgres"


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    server = PostgresServer(free_port())
    server.start()
    yield server
    server.stop()


@pytest.fixture
def postgres(postgres_server) -> Iterator[PostgresServer]:
    """The session's server, for a test that stops it: running again after
    the test, whatever the test did, and this process reconnected."""
    from django.db import close_old_connections, connection

    yield postgres_server
    if postgres_server.process.poll() is not None:
        postgres_server.start_again()
    close_old_connections()
    connection.close()


@pytest.fixture(scope="session", autouse=ON_POSTGRES)
def _postgres_sessions_closed(django_db_setup, django_db_blocker):
    """Before the test database is dropped, end the sessions other threads of
    this process left open (asgiref's executors, the task monitor): DROP
    DATABASE refuses while any is connected."""
    yield
    from django.db import connection

    with django_db_blocker.unblock(), connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )


@pytest.fixture(scope="session")
def django_db_modify_db_settings(request, tmp_path_factory):
    """The database of this session's own: a PostgreSQL server it starts
    (TEST_DATABASE=postgres), else an SQLite file (worker subprocesses open it
    by path), so parallel sessions in one checkout never share one."""
    from django.db import connections

    database = settings.DATABASES["default"]
    if ON_POSTGRES:
        server = request.getfixturevalue("postgres_server")
        database.clear()
        database.update(server.database_settings())
        connections.configure_settings({"default": database})  # Django's defaults
        del connections["default"]  # made for SQLite; the next use makes a new one
    elif database["ENGINE"] == "django.db.backends.sqlite3":
        test_db = tmp_path_factory.mktemp("db") / "test.sqlite3"
        database.setdefault("TEST", {})["NAME"] = str(test_db)


@pytest.fixture(scope="session")
def media_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("media")
    settings.MEDIA_ROOT = root
    return root


# Short job-system timings, so crash recovery is seen in seconds.
FAST_TIMINGS = {
    "TASKS_HEARTBEAT_SECONDS": 0.3,
    "TASKS_STALE_AFTER_SECONDS": 2.0,
    "TASKS_RESEND_AFTER_SECONDS": 3.0,
    "TASKS_RECONCILE_INTERVAL_SECONDS": 0.3,
}


@pytest.fixture(scope="session")
def process_env(redis_server, media_root, django_db_setup, django_db_blocker) -> dict:
    """Environment for subprocesses: this session's Redis, test database and media."""
    database = settings.DATABASES["default"]
    for name, value in FAST_TIMINGS.items():
        setattr(settings, name, value)
    env = dict(os.environ)
    env.update(
        {name: str(value) for name, value in FAST_TIMINGS.items()},
        DJANGO_SETTINGS_MODULE="project.settings",
        DJANGO_DEBUG="1",
        REDIS_URL=redis_server.url,
        CELERY_BROKER_URL=celery_url_for(redis_server.url),
        DATABASE_URL=database_url(database),
        PROMETHEUS_MULTIPROC_DIR=str(settings.METRICS_DIR),
        DJANGO_MEDIA_ROOT=str(media_root),
        PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
        PYTHONUNBUFFERED="1",
    )
    return env


def database_url(database: dict) -> str:
    """DATABASE_URL for subprocesses, of the (test) database in use."""
    if database["ENGINE"] == "django.db.backends.postgresql":
        return (
            f"postgres://{database['USER']}@{database['HOST']}:{database['PORT']}"
            f"/{database['NAME']}"
        )
    return f"sqlite:///{database['NAME']}"


@pytest.fixture(scope="session")
def process_logs(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("process-logs")


@pytest.fixture
def start_process(process_env, process_logs) -> Iterator[Callable[..., ManagedProcess]]:
    """Factory: start a Procfile entry (or an argv); stopped at teardown."""
    started: list[ManagedProcess] = []

    def start(name: str, argv: list[str] | str | None = None, unset=(), **extra_env):
        env = {**process_env, **{k: str(v) for k, v in extra_env.items()}}
        for key in unset:
            env.pop(key, None)
        command = argv if argv is not None else procfile_command(name)
        process = ManagedProcess(name, command, env, process_logs)
        started.append(process)
        return process

    yield start
    for process in reversed(started):
        process.stop()


@pytest.fixture(scope="session")
def web_server(process_env, process_logs) -> Iterator[str]:
    """Daphne, as the Procfile runs it, on a free port; yields its base URL."""
    port = free_port()
    process = start_daphne({**process_env, "PORT": str(port)}, process_logs)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.stop()


@pytest.fixture
def worker(start_process) -> Callable[..., ManagedProcess]:
    """Factory: `runworker` (a supervisor and its worker processes) on the
    given queues, ready when every worker process listens."""

    def start(
        *queues: str,
        concurrency: int = 1,
        processes: int = 1,
        name: str = "runworker",
        **env,
    ):
        argv = runworker_argv(queues or ("default",), concurrency, processes)
        process = start_process(name, argv, **env)
        process.wait_ready(
            "listening on",
            timeout=30,
            message="the worker processes to listen",
            count=processes,
        )
        return process

    return start


@pytest.fixture
def celery_worker(start_process) -> Callable[..., ManagedProcess]:
    """Factory: a Celery worker process (prefork, as in production), ready when up."""

    def start(concurrency: int = 1, name: str = "celery", **env):
        process = start_process(name, celery_worker_argv(concurrency), **env)
        process.wait_ready(
            " ready.", timeout=60, message="the Celery worker to be ready"
        )
        return process

    return start


@pytest.fixture
def reconciler(start_process) -> Callable[[], ManagedProcess]:
    def start():
        argv = [str(VENV_BIN / "python"), "manage.py", "reconcile_tasks", "--loop"]
        return start_process("reconciler", argv)

    return start


@pytest.fixture(scope="session")
def browser():
    """Headless Chromium (Debian's /usr/bin/chromium) driven by Playwright."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs it with apt-get.")
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an event loop running in this thread, which
    # Django's async-safety check mistakes for async code (Django's docs
    # suggest this flag for exactly this case).
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    context = browser.new_context()
    page = context.new_page()
    yield page
    context.close()


def pytest_addoption(parser):
    parser.addoption(
        "--deploy",
        action="store_true",
        help="run tests/deploy (nginx, gunicorn, Daphne, ...: `make test-deploy`)",
    )


def _not_repeated_on_postgres(item) -> bool:
    """Tests that open no database (tests/unit, and those marked so), and the
    browser tests (pages over Daphne: the database behind them is used as in
    the integration tests, which do run on PostgreSQL), run in `make test`
    only, so that both suites fit CI's time side by side."""
    marked = item.get_closest_marker("database_free") is not None
    return marked or "tests/unit/" in item.nodeid or "tests/browser/" in item.nodeid


def pytest_collection_modifyitems(config, items):
    """Run browser tests last: Playwright's sync API keeps an event loop running
    in the main thread while the browser is open, which async tests cannot share.
    The deployment tests run only with --deploy (they need nginx), and on
    PostgreSQL the tests that open no database and the browser tests are left
    out."""
    deploy = config.getoption("--deploy")
    kept = [
        item
        for item in items
        if ("tests/deploy/" in item.nodeid) == deploy
        and not (ON_POSTGRES and _not_repeated_on_postgres(item))
    ]
    config.hook.pytest_deselected(items=[i for i in items if i not in kept])
    items[:] = kept
    for item in items:
        if "tests/browser/" in item.nodeid:
            item.add_marker(pytest.mark.browser)
    items.sort(key=lambda item: item.get_closest_marker("browser") is not None)
