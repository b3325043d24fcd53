"""Benchmark the websockets: Daphne against uvicorn on the same ASGI app.

    .venv/bin/python bench/websocket.py [--quick]

Starts its own Redis (loopback, free port) and SQLite database in a temp
directory, migrates it and signs one user in, then for each server (one
process each, the project's default settings, the Redis channel layer)
measures, with an asyncio client (the ``websockets`` package) in this
process:

- echo: round trip of 2,000 messages, one after the other, on /chat/
  (p50/p99 ms);
- /chat/ x N: N connections opened at once, each echoing 10 messages, for N
  = 1,000 and 5,000 (connect p50/p99 ms, errors, seconds in all);
- idle /ws/jobs/: 5,000 signed-in sockets (each with its snapshot) held for
  60 s: errors, and the server's memory per connection (RSS growth / N);
- fan-out: one task event to 1,000 sockets of one user, 20 times: from the
  group_send to each socket's receipt (p50/p99 ms).

Servers: Daphne with its defaults (Twisted's listen backlog of 50, and a
handshake not accepted within 5 s is rejected), Daphne as the Procfile and
deploy/ run it (an endpoint string with a backlog of 1,024, and 30 s to
accept a handshake: with the defaults, 4,779 of 5,000 connections at once
failed), and uvicorn (backlog 2048, no handshake limit) as the reference.
The client runs in this process: on a 2-core machine its own work is part
of every latency, for every server alike. The ratios are
against uvicorn, run in this process; absolute numbers depend on the machine.
Prints one table and PASS/FAIL per target; always exits 0. Every process it
starts is stopped by its PID at the end. Not a test.
"""

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != HERE]

import argparse  # noqa: E402
import asyncio  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402

import psutil  # noqa: E402

from bench.environment import prepared  # noqa: E402
from project.redis_server import free_port  # noqa: E402
from tests.support import ManagedProcess, http_ok, wait_for  # noqa: E402

logger = logging.getLogger("bench.websocket")

VENV_BIN = Path(sys.executable).parent
# Twisted's listen backlog is 50 unless the endpoint string says otherwise.
DAPHNE_BACKLOG = 1024
# Daphne rejects a handshake its application has not accepted within 5 s
# (WSREJECT): a burst of 5,000 in one process takes longer than that.
DAPHNE_CONNECT_TIMEOUT = 30
ECHO_MESSAGES = 2000
CROWDS = (1000, 5000)
IDLE_SOCKETS = 5000
FAN_OUT_SOCKETS = 1000
FAN_OUT_EVENTS = 20
# Targets.
TARGET_FAN_OUT_P99_MS = 100.0
TARGET_CONNECT_P99_VS_UVICORN = 1.0


@dataclass
class Server:
    name: str
    argv: list[str]


@dataclass
class Result:
    server: str
    echo_ms: tuple[float, float] | None = None
    # N: (connect p50 ms, connect p99 ms, errors, seconds)
    crowds: dict[int, tuple[float, float, int, float]] = field(default_factory=dict)
    idle: tuple[int, int, float] | None = None  # (open, errors, KiB per socket)
    fan_out_ms: tuple[float, float, int] | None = None  # (p50, p99, missing)
    failure: str = ""


def servers(port: int) -> list[Server]:
    app = "project.asgi:application"
    limits = ["--websocket-max-message-size", "65536"]
    daphne = str(VENV_BIN / "daphne")
    endpoint = f"tcp:port={port}:interface=127.0.0.1:backlog={DAPHNE_BACKLOG}"
    patient = ["--websocket_connect_timeout", str(DAPHNE_CONNECT_TIMEOUT)]
    return [
        Server("daphne", [daphne, "-b", "127.0.0.1", "-p", str(port), *limits, app]),
        Server("daphne (Procfile)", [daphne, "-e", endpoint, *patient, *limits, app]),
        Server(
            "uvicorn",
            [
                str(VENV_BIN / "uvicorn"),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--ws",
                "websockets",
                "--log-level",
                "warning",
                app,
            ],
        ),
    ]


# --- The client ---------------------------------------------------------------


class Client:
    def __init__(self, base: str, cookie: str) -> None:
        self.base = base.replace("http://", "ws://")
        self.origin = base
        self.cookie = cookie

    async def connect(self, path: str, signed_in: bool = False):
        from websockets.asyncio.client import connect

        headers = {"Cookie": self.cookie} if signed_in else {}
        return await connect(
            self.base + path,
            origin=self.origin,
            additional_headers=headers,
            open_timeout=60,
            ping_interval=None,
            max_queue=None,
        )

    async def echo(self, messages: int) -> tuple[float, float]:
        socket = await self.connect("/chat/")
        times = []
        try:
            for n in range(messages):
                began = time.perf_counter()
                await socket.send(f"m{n}")
                await socket.recv()
                times.append((time.perf_counter() - began) * 1000)
        finally:
            await socket.close()
        return percentiles(times)

    async def crowd(self, count: int) -> tuple[float, float, int, float]:
        """``count`` sockets at once, each echoing 10 messages."""
        began = time.perf_counter()
        outcomes = await asyncio.gather(
            *(self._one_of_crowd() for _ in range(count)), return_exceptions=True
        )
        seconds = time.perf_counter() - began
        connects = [o for o in outcomes if isinstance(o, float)]
        errors = count - len(connects)
        p50, p99 = percentiles(connects) if connects else (math_nan(), math_nan())
        return p50, p99, errors, seconds

    async def _one_of_crowd(self) -> float:
        began = time.perf_counter()
        socket = await self.connect("/chat/")
        connected = (time.perf_counter() - began) * 1000
        try:
            for n in range(10):
                await socket.send(f"m{n}")
                await socket.recv()
        finally:
            await socket.close()
        return connected

    async def signed_in_sockets(self, count: int) -> tuple[list, int]:
        """``count`` /ws/jobs/ sockets, each past its snapshot; and errors."""

        async def one():
            socket = await self.connect("/ws/jobs/", signed_in=True)
            first = json.loads(await asyncio.wait_for(socket.recv(), 60))
            assert first["type"] == "snapshot", first
            return socket

        opened = []
        errors = 0
        for start in range(0, count, 500):  # in waves: the point is holding
            batch = await asyncio.gather(
                *(one() for _ in range(min(500, count - start))),
                return_exceptions=True,
            )
            opened += [s for s in batch if not isinstance(s, BaseException)]
            failed = [s for s in batch if isinstance(s, BaseException)]
            errors += len(failed)
            if failed:
                logger.info("e.g. %s", _describe(failed[0]))
        return opened, errors


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"[:200]


async def close_all(sockets) -> None:
    await asyncio.gather(*(s.close() for s in sockets), return_exceptions=True)


async def fan_out(sockets, user_id: int, events: int) -> tuple[float, float, int]:
    """Publish ``events`` task events to the user's group; each socket's
    delay from the send to its receipt."""
    from channels.layers import get_channel_layer

    from tasks.events import owner_group

    layer = get_channel_layer()
    delays: list[float] = []
    missing = 0
    for n in range(events):
        sent = time.time()
        event = {"type": "task.update", "id": f"bench{n}", "seq": 1, "sent": sent}

        async def receipt(socket):
            while True:  # (an idle socket may get a ping first)
                message = json.loads(await asyncio.wait_for(socket.recv(), 10))
                if message["type"] == "task.update":
                    return (time.time() - message["sent"]) * 1000

        waiting = [asyncio.ensure_future(receipt(s)) for s in sockets]
        await layer.group_send(owner_group(user_id), event)
        got = await asyncio.gather(*waiting, return_exceptions=True)
        delays += [d for d in got if isinstance(d, float)]
        missing += sum(not isinstance(d, float) for d in got)
    p50, p99 = percentiles(delays) if delays else (math_nan(), math_nan())
    return p50, p99, missing


def percentiles(values: list[float]) -> tuple[float, float]:
    ordered = sorted(values)
    return statistics.median(ordered), ordered[
        min(len(ordered) - 1, int(len(ordered) * 0.99))
    ]


def math_nan() -> float:
    return float("nan")


# --- Running one server ---------------------------------------------------------


def rss_kib(pid: int) -> float:
    process = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [process, *process.children(True)]) / 1024


async def measure(server: Server, url: str, pid: int, cookie: str, user_id: int, args):
    client = Client(url, cookie)
    result = Result(server.name)
    result.echo_ms = await client.echo(args.echo)
    for count in args.crowds:
        result.crowds[count] = await client.crowd(count)
        logger.info("%s: %d connections: %s", server.name, count, result.crowds[count])
    before = rss_kib(pid)
    sockets, errors = await client.signed_in_sockets(args.idle)
    await asyncio.sleep(args.hold)  # holding them idle is the measurement
    alive = sum(s.state.name == "OPEN" for s in sockets)
    grown = (rss_kib(pid) - before) / max(len(sockets), 1)
    result.idle = (alive, errors + len(sockets) - alive, grown)
    await close_all(sockets)
    sockets, errors = await client.signed_in_sockets(args.fan_out)
    try:
        p50, p99, missing = await fan_out(sockets, user_id, args.fan_out_events)
        result.fan_out_ms = (p50, p99, missing + errors)
    finally:
        await close_all(sockets)
    return result


def run_server(server: Server, port: int, env: dict, logs: Path, cookie, user_id, args):
    process = ManagedProcess(server.name.split()[0], server.argv, env, logs)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(
            lambda: http_ok(url + "/") or not process.alive(),
            timeout=60,
            message=f"{server.name} to serve /",
        )
        if not process.alive():
            return Result(server.name, failure=process.output()[-300:])
        return asyncio.run(
            measure(server, url, process.popen.pid, cookie, user_id, args)
        )
    except Exception as error:
        logger.exception("%s failed", server.name)
        return Result(server.name, failure=f"{type(error).__name__}: {error}")
    finally:
        process.stop()


def sign_in() -> tuple[str, int]:
    """A user and a session cookie for /ws/jobs/, as the login view leaves them."""
    from django.conf import settings
    from django.contrib.auth import (
        BACKEND_SESSION_KEY,
        HASH_SESSION_KEY,
        SESSION_KEY,
        get_user_model,
    )
    from django.contrib.sessions.backends.db import SessionStore

    user = get_user_model().objects.create_user("bench")
    session = SessionStore()
    session[SESSION_KEY] = str(user.pk)
    session[BACKEND_SESSION_KEY] = settings.AUTHENTICATION_BACKENDS[0]
    session[HASH_SESSION_KEY] = user.get_session_auth_hash()
    session.save()
    return f"{settings.SESSION_COOKIE_NAME}={session.session_key}", user.pk


# --- Report -----------------------------------------------------------------------


def print_report(results: list[Result], args) -> None:
    by_name = {r.server: r for r in results}
    base = by_name.get("uvicorn")
    print("\nWebsockets: one server process, Redis channel layer (uvicorn = 1.00x)")
    header = f"{'server':<22} {'measure':<34} {'value':>26} {'vs uvicorn':>11}"
    print(header)
    print("-" * len(header))
    for result in results:
        if result.failure:
            print(f"{result.server:<22} failed: {result.failure}")
            continue
        for label, value, mine, theirs in rows(result, base, args):
            ratio = f"{mine / theirs:.2f}x" if mine and theirs else "-"
            print(f"{result.server:<22} {label:<34} {value:>26} {ratio:>11}")
    print("\nTargets:")
    for ok, text in checks(results, base):
        print(f"  {'PASS' if ok else 'FAIL' if ok is False else 'n/a '}  {text}")


def rows(result: Result, base: Result | None, args):
    """(label, value text, number for the ratio, uvicorn's number)."""

    def theirs(get):
        try:
            return get(base) if base and not base.failure else None
        except (KeyError, TypeError):
            return None

    p50, p99 = result.echo_ms
    yield (
        "echo RTT p50/p99 ms",
        f"{p50:.2f} / {p99:.2f}",
        p50,
        theirs(lambda b: b.echo_ms[0]),
    )
    for count, (c50, c99, errors, seconds) in result.crowds.items():
        yield (
            f"/chat/ x{count}: connect p50/p99 ms",
            f"{c50:.0f} / {c99:.0f}",
            c99,
            theirs(lambda b, n=count: b.crowds[n][1]),
        )
        yield (
            f"/chat/ x{count}: errors, seconds",
            f"{errors}, {seconds:.1f} s",
            None,
            None,
        )
    alive, errors, kib = result.idle
    yield (
        f"idle /ws/jobs/ x{args.idle} ({args.hold:.0f} s)",
        f"{alive} open, {errors} errors",
        None,
        None,
    )
    yield "  memory per socket KiB", f"{kib:.1f}", kib, theirs(lambda b: b.idle[2])
    f50, f99, missing = result.fan_out_ms
    yield (
        f"fan-out to {args.fan_out}: p50/p99 ms",
        f"{f50:.1f} / {f99:.1f} ({missing} lost)",
        f99,
        theirs(lambda b: b.fan_out_ms[1]),
    )


def checks(results: list[Result], base: Result | None):
    daphnes = [r for r in results if r.server.startswith("daphne") and not r.failure]
    for result in daphnes:
        name = result.server
        most = max(result.crowds)  # (fewer than the target with --quick)
        errors = result.crowds[most][2] + (result.idle[1] if result.idle else 1)
        counted = f"{most:,} connections"
        yield errors == 0, f"{name}: {counted} with no errors ({errors})"
        f99, limit = result.fan_out_ms[1], TARGET_FAN_OUT_P99_MS
        yield f99 < limit, f"{name}: fan-out p99 {f99:.1f} ms < {limit:.0f} ms"
        if base is None or base.failure:
            yield None, f"{name}: connect p99 against uvicorn (uvicorn did not run)"
            continue
        for count in result.crowds:
            ours, theirs = result.crowds[count][1], base.crowds[count][1]
            ok = ours <= theirs * TARGET_CONNECT_P99_VS_UVICORN
            text = f"connect p99 at {count:,}: {ours:.0f} ms <= uvicorn's {theirs:.0f}"
            yield ok, f"{name}: {text}"


# --- Main -------------------------------------------------------------------------


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small counts, 10 s hold")
    args = parser.parse_args(argv)
    args.echo, args.crowds, args.idle = ECHO_MESSAGES, CROWDS, IDLE_SOCKETS
    args.fan_out, args.fan_out_events, args.hold = FAN_OUT_SOCKETS, FAN_OUT_EVENTS, 60.0
    if args.quick:
        args.echo, args.crowds, args.idle = 500, (200, 1000), 1000
        args.fan_out, args.fan_out_events, args.hold = 200, 5, 10.0
    return args


def raise_open_files() -> None:
    """Every socket is a file on both ends: lift the soft limit to the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 4 * IDLE_SOCKETS + 1000
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, wanted), hard))


def main(argv=None) -> int:
    args = parse_args(argv)
    raise_open_files()
    results = []
    with prepared("websocket") as ready:
        env = {**ready.env, "DJANGO_ALLOWED_HOSTS": "127.0.0.1"}
        env["DJANGO_SECURE_SSL_REDIRECT"] = "0"
        cookie, user_id = sign_in()
        for index in range(len(servers(0))):
            port = free_port()
            server = servers(port)[index]
            logger.info("Measuring %s", server.name)
            results.append(
                run_server(server, port, env, ready.tmp / "logs", cookie, user_id, args)
            )
    print_report(results, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
