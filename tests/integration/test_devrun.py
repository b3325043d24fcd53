"""`make run`'s process set: it serves, and SIGTERM leaves no process behind."""

import signal
import sys

import psutil
import pytest

from project.redis_server import free_port
from tests.support import http_ok, wait_for

# `make run` brings its own SQLite database, whatever the session uses.
pytestmark = [pytest.mark.slow, pytest.mark.database_free]

EXPECTED = {"daphne", "runworker", "celery", "redis-server"}


def _names(processes: list[psutil.Process]) -> set[str]:
    found = set()
    for process in processes:
        try:
            cmdline = " ".join(process.cmdline())
        except psutil.Error:
            continue
        found |= {name for name in EXPECTED if name in cmdline}
    return found


def test_devrun_starts_every_process_and_sigterm_stops_them_all(
    start_process, tmp_path
):
    # Given the runner `make run` uses, with its own embedded Redis (no REDIS_URL)
    port = free_port()
    runner = start_process(
        "devrun",
        [sys.executable, "-m", "project.devrun"],
        unset=("REDIS_URL", "CELERY_BROKER_URL"),
        PORT=port,
        DJANGO_VAR_DIR=tmp_path,
    )
    runner_ps = psutil.Process(runner.pid)
    # When it is up
    wait_for(
        lambda: http_ok(f"http://127.0.0.1:{port}/") or not runner.alive(),
        timeout=60,
        message="the web process",
    )
    assert runner.alive(), runner.output()
    children = wait_for(
        lambda: (
            (c := runner_ps.children(recursive=True)) and _names(c) == EXPECTED and c
        ),
        timeout=60,
        message=f"all of {sorted(EXPECTED)} to start; output:\n{runner.output()}",
    )
    # And it gets SIGTERM, as from Ctrl-C or `kill` on make
    runner.signal(signal.SIGTERM)
    # Then it exits and every process it started is gone
    wait_for(lambda: not runner.alive(), timeout=60, message="the runner to exit")
    _gone, alive = psutil.wait_procs(children, timeout=30)
    assert alive == [], f"left running: {[p.cmdline() for p in alive]}"
    assert runner.popen.returncode in (0, -signal.SIGTERM, 128 + signal.SIGTERM), (
        runner.output()
    )
