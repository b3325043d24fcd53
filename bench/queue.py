"""Benchmark the job system's transports against Celery, Dramatiq and stock Channels.

    .venv/bin/python bench/queue.py [--quick] [--tasks N] [--latency-tasks N]
                                    [--only TEXT ...]

Starts its own Redis (loopback, free port) and SQLite database in a temp
directory, migrates it, then for each variant starts its worker process(es)
with the same environment, and measures with no-op tasks:

- tasks/s: N no-ops enqueued in one loop while the workers run, from the first
  enqueue to the last completion (our records: the last ``finished_at``;
  peers: a marked no-op sent last stores its finish time in Redis);
- sync enq/s: the rate of that enqueue loop alone (sync code, as in a view);
- p50/p99 ms: enqueue-to-start latency of tasks enqueued one at a time, each
  once the previous one has started, so an idle worker picks each up
  (records: ``started_at - enqueued_at``; peers: the task pushes
  ``time.time() - sent`` to a Redis list).

Variants: ChannelsBackend (``runworker --processes 1`` and ``2``, and one
process with 4 slots), CeleryBackend, plain Celery, Celery with a database
result backend (SQLAlchemy on the same SQLite file), Dramatiq (1 process, 8
threads) and the stock Channels worker with a bare consumer on raw
channels-redis. The no-op tasks are in bench/queue_peers.py. Everything runs
with the project's default settings (channel capacity 1000 and all).

Two scenarios follow the table:

- drain: DRAIN_TASKS no-ops enqueued before any worker starts, then drained:
  tasks/s from the workers being ready to the last completion, for
  ChannelsBackend (1 and 2 processes), plain Celery and Dramatiq;
- slow backlog: BACKLOG_TASKS tasks of 0.3 s enqueued at once on one worker
  process (and the reconciler), as a ratio to the ideal time.

Last, a profile of where a no-op's time goes in a ChannelsBackend worker
(py-spy samples of the worker process while it drains).

Prints one table and PASS/FAIL per target; always exits 0 (timings on shared
machines are noisy). A variant that cannot run prints a row saying why. Every
process it starts is stopped by its PID at the end. Not a test.
"""

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# This file is named like the stdlib's queue module: keep bench/ off the path.
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != HERE]

import argparse  # noqa: E402
import asyncio  # noqa: E402
import contextlib  # noqa: E402
import logging  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402

import psutil  # noqa: E402

from bench import queue_peers, report  # noqa: E402
from bench.environment import prepared  # noqa: E402
from bench.queue_peers import DONE_KEY, LATENCY_KEY, RAW_CHANNEL  # noqa: E402
from tests.support import ManagedProcess, wait_for  # noqa: E402

logger = logging.getLogger("bench.queue")

VENV_BIN = Path(sys.executable).parent
PYTHON = str(VENV_BIN / "python")
WARMUP_TASKS = 20
# Targets for ChannelsBackend with one worker process (one slot), against
# plain Celery with one worker process (concurrency 1).
TARGET_VS_CELERY = 1.2
TARGET_VS_CELERY_DB = 1.5
TARGET_DRAIN_VS_CELERY = 1.0
TARGET_BACKLOG_VS_IDEAL = 1.1
DRAIN_TASKS = 20_000
BACKLOG_TASKS = 300
PROFILE_TASKS = 6_000

PLAIN_CELERY = "plain Celery @shared_task"
CELERY_DB = "Celery + db results"
DRAMATIQ = "Dramatiq"
OURS_1 = "ChannelsBackend 1 process"
OURS_2 = "ChannelsBackend 2 processes"


# --- Results --------------------------------------------------------------------


@dataclass
class Row:
    name: str
    used: str
    throughput: float | None = None
    enqueue_rate: float | None = None
    latencies: list[float] = field(default_factory=list)
    error: str = ""

    def p(self, q: float) -> float | None:
        """Latency percentile ``q`` (0-100) in ms, nearest rank."""
        if not self.latencies:
            return None
        ordered = sorted(self.latencies)
        rank = max(1, math.ceil(q / 100 * len(ordered)))
        return ordered[rank - 1] * 1000


# --- Variants -------------------------------------------------------------------


class Variant:
    """One transport: its workers, how to enqueue, how to see tasks done."""

    name = ""
    used = ""
    # How often each worker's log shows its ready text (once per process).
    ready_count = 1

    def __init__(self, bench: "Bench"):
        self.bench = bench

    def workers(self) -> list[tuple[list[str], str]]:
        """(argv, text its log shows when ready) of each command started."""
        raise NotImplementedError

    def reset(self) -> None:
        self.bench.redis.delete(LATENCY_KEY, DONE_KEY)

    def enqueue_many(self, n: int) -> float:
        """Enqueue n no-ops then a marked one; return the loop's seconds for n."""
        raise NotImplementedError

    def wait_done(self, n: int, timeout: float) -> float:
        """Wait for the n (+ mark) no-ops; return the last completion (epoch s)."""
        value = wait_for(
            lambda: self.bench.redis.get(DONE_KEY),
            timeout=timeout,
            message=f"{self.name} to finish",
        )
        return float(value)

    def latency_run(self, n: int) -> list[float]:
        """Enqueue n no-ops one at a time, each once the previous has started."""
        for done in range(1, n + 1):
            self.enqueue_timed(time.time())
            wait_for(
                lambda done=done: self.bench.redis.llen(LATENCY_KEY) >= done,
                timeout=10,
                message=f"{self.name} to start a task",
                interval=0.0005,
            )
        return [float(v) for v in self.bench.redis.lrange(LATENCY_KEY, 0, -1)]

    def enqueue_timed(self, sent: float) -> None:
        raise NotImplementedError

    def extra(self, row: Row, n: int) -> None:
        """Further measurements of a variant, after the standard ones."""


class OursChannels(Variant):
    def __init__(self, bench, processes=1, concurrency=1, task="noop"):
        super().__init__(bench)
        self.processes = self.ready_count = processes
        self.concurrency = concurrency
        self.backend_task = task
        slots = f", {concurrency} slots" if concurrency > 1 else ""
        plural = "es" if processes > 1 else ""
        self.name = f"ChannelsBackend {processes} process{plural}{slots}"
        self.used = (
            f"`manage.py runworker default --processes {processes} --concurrency "
            f"{concurrency}`; @task {task} on backend `default`, enqueue()"
        )

    def workers(self):
        argv = [PYTHON, "manage.py", "runworker", "default"]
        argv += ["--processes", str(self.processes)]
        argv += ["--concurrency", str(self.concurrency)]
        return [(argv, "listening on")]

    @property
    def task(self):
        return getattr(queue_peers, self.backend_task)

    def reset(self):
        from tasks.models import TaskRecord

        super().reset()
        TaskRecord.objects.all().delete()

    def enqueue_many(self, n):
        task = self.task
        start = time.perf_counter()
        for _ in range(n):
            task.enqueue()
        return time.perf_counter() - start

    def wait_done(self, n, timeout):
        from django.db.models import Max

        from tasks.models import FINISHED, TaskRecord

        finished = TaskRecord.objects.filter(status__in=FINISHED)
        wait_for(
            lambda: finished.count() >= n,
            timeout=timeout,
            message=f"{self.name} to finish",
            interval=0.02,
        )
        failed = TaskRecord.objects.failed().count()
        if failed:
            raise RuntimeError(f"{failed} task(s) FAILED")
        return finished.aggregate(last=Max("finished_at"))["last"].timestamp()

    def latency_run(self, n):
        from tasks.models import TaskRecord

        task = self.task
        for _ in range(n):
            started = TaskRecord.objects.filter(
                pk=task.enqueue().id, started_at__isnull=False
            )
            wait_for(
                started.exists,
                timeout=10,
                message=f"{self.name} to start a task",
                interval=0.0005,
            )
        return [
            (started - enqueued).total_seconds()
            for enqueued, started in TaskRecord.objects.values_list(
                "enqueued_at", "started_at"
            )
        ]


class OursCelery(OursChannels):
    def __init__(self, bench):
        super().__init__(bench, task="guaranteed_noop")
        self.name = "CeleryBackend"
        self.used = (
            "`celery -A project worker -Q default --concurrency 1` (prefork); "
            "@task noop on backend `guaranteed`, enqueue()"
        )

    def workers(self):
        return [(celery_worker_argv("project", "default"), " ready.")]


def celery_worker_argv(app: str, queue: str, *more: str) -> list[str]:
    return [
        str(VENV_BIN / "celery"), "-A", app, "worker", "--loglevel", "INFO",
        "--concurrency", "1", "--pool", "prefork", "--without-gossip",
        "--without-mingle", "--without-heartbeat", "-Q", queue, *more,
    ]  # fmt: skip


class PlainCelery(Variant):
    name = PLAIN_CELERY
    used = (
        "`celery -A project worker -Q default --concurrency 1 -I "
        "bench.queue_peers` (prefork, project config: acks_late, prefetch 1); "
        "@shared_task(ignore_result=True), .delay()"
    )

    def workers(self):
        argv = celery_worker_argv("project", "default", "-I", "bench.queue_peers")
        return [(argv, " ready.")]

    @property
    def task(self):
        return queue_peers.plain_noop

    def enqueue_many(self, n):
        task = self.task
        start = time.perf_counter()
        for _ in range(n):
            task.delay()
        elapsed = time.perf_counter() - start
        task.delay(mark=True)
        return elapsed

    def enqueue_timed(self, sent):
        self.task.delay(sent=sent)


class CeleryDb(PlainCelery):
    name = CELERY_DB
    used = (
        "bench-only Celery app (same config as the project's) with "
        "result_backend db+sqlite (SQLAlchemy) on the bench SQLite file; "
        "1 prefork worker, concurrency 1; task stores its SUCCESS row"
    )

    def workers(self):
        app = "bench.queue_peers:db_celery_app"
        return [(celery_worker_argv(app, queue_peers.DB_CELERY_QUEUE), " ready.")]

    @property
    def task(self):
        return queue_peers.db_celery_app.tasks["bench.db_noop"]


class Dramatiq(Variant):
    name = DRAMATIQ
    used = (
        "`dramatiq bench.queue_peers:dramatiq_broker --processes 1 --threads 8` "
        "on the same Redis (default middleware); actor.send()"
    )

    def workers(self):
        argv = [
            str(VENV_BIN / "dramatiq"), "bench.queue_peers:dramatiq_broker",
            "--processes", "1", "--threads", "8", "--queues", "bench",
        ]  # fmt: skip
        return [(argv, "Worker process is ready for action.")]

    def enqueue_many(self, n):
        actor = queue_peers.dramatiq_broker.bench_noop
        start = time.perf_counter()
        for _ in range(n):
            actor.send()
        elapsed = time.perf_counter() - start
        actor.send(mark=True)
        return elapsed

    def enqueue_timed(self, sent):
        queue_peers.dramatiq_broker.bench_noop.send(sent=sent)


class StockChannels(Variant):
    name = "stock runworker, bare consumer"
    used = (
        "channels.worker.Worker (the stock runworker's body) with a "
        "ChannelNameRouter to a bare AsyncConsumer; tasks/s: layer.send from "
        "one event loop; sync enq/s: tasks.transport.send (loop thread)"
    )

    def workers(self):
        argv = [
            PYTHON, "-c",
            "from bench.queue_peers import run_stock_worker; run_stock_worker()",
        ]  # fmt: skip
        return [(argv, "Stock Channels worker listening")]

    # The messages are the work here, so a full channel (capacity 1000 by
    # default) is waited out, as a producer must, and the waits are counted.
    full_waits = 0

    def enqueue_many(self, n):
        from channels.exceptions import ChannelFull
        from channels.layers import get_channel_layer

        async def send(layer, message) -> None:
            while True:
                try:
                    return await layer.send(RAW_CHANNEL, message)
                except ChannelFull:
                    self.full_waits += 1
                    await asyncio.sleep(0.001)

        async def send_all() -> float:
            layer = get_channel_layer()
            message = {"type": "bench.noop"}
            await send(layer, message)  # open the pool first
            start = time.perf_counter()
            for _ in range(n - 1):
                await send(layer, message)
            elapsed = time.perf_counter() - start
            await send(layer, {"type": "bench.noop", "mark": True})
            return elapsed * n / (n - 1)

        return asyncio.run(send_all())

    def enqueue_timed(self, sent):
        self._sync_send({"type": "bench.noop", "sent": sent})

    def _sync_send(self, message: dict) -> None:
        from tasks import transport
        from tasks.exceptions import TransportUnavailable

        while True:
            try:
                return transport.send(RAW_CHANNEL, message)
            except TransportUnavailable:
                self.full_waits += 1
                time.sleep(0.001)

    def extra(self, row, n):
        """The sync enqueue rate through our transport (loop thread), and,
        for the record, through async_to_sync."""
        from asgiref.sync import async_to_sync
        from channels.layers import get_channel_layer

        message = {"type": "bench.noop"}
        self.reset()
        start = time.perf_counter()
        for _ in range(n):
            self._sync_send(message)
        row.enqueue_rate = n / (time.perf_counter() - start)
        self._sync_send({"type": "bench.noop", "mark": True})
        self.wait_done(n, 60)
        self.reset()
        count = min(n, 300)
        send = async_to_sync(get_channel_layer().send)
        start = time.perf_counter()
        for _ in range(count):
            send(RAW_CHANNEL, message)
        self.bench.notes.append(
            f"async_to_sync(channel_layer.send) from sync code: "
            f"{count / (time.perf_counter() - start):,.0f}/s ({count} sends)"
        )
        send(RAW_CHANNEL, {"type": "bench.noop", "mark": True})
        self.wait_done(count, 60)
        self.bench.notes.append(
            f"stock runworker: {self.full_waits:,} sends found the channel full "
            "(default capacity) and waited 1 ms before trying again"
        )


# --- The bench ------------------------------------------------------------------


class Bench:
    def __init__(self, args, tmp: Path, redis_url: str, env: dict):
        import redis

        self.args = args
        self.tmp = tmp
        self.env = env
        self.redis = redis.Redis.from_url(redis_url)
        self.processes: list[ManagedProcess] = []
        self.notes: list[str] = []

    def run_variant(self, variant: Variant) -> Row:
        row = Row(variant.name, variant.used)
        n = self.args.tasks
        try:
            with self.workers(variant):
                variant.reset()
                variant.enqueue_many(WARMUP_TASKS)
                variant.wait_done(WARMUP_TASKS, 60)
                variant.reset()
                first = time.time()
                enqueue_seconds = variant.enqueue_many(n)
                last = variant.wait_done(n, max(60.0, n / 50))
                row.enqueue_rate = n / enqueue_seconds
                row.throughput = n / (last - first)
                variant.reset()
                row.latencies = variant.latency_run(self.args.latency_tasks)
                variant.extra(row, n)
            logger.info(
                "%s: %.0f tasks/s, enqueue %.0f/s, p50 %.2f ms, p99 %.2f ms",
                row.name,
                row.throughput,
                row.enqueue_rate,
                row.p(50),
                row.p(99),
            )
        except Exception as error:
            row.error = _failure(variant, error)
        return row

    def run_drain(self, variant: Variant, n: int) -> Row:
        """n tasks waiting before any worker starts, then drained."""
        row = Row(variant.name, variant.used)
        try:
            variant.reset()
            variant.enqueue_many(n)
            with self.workers(variant):
                ready = time.time()
                last = variant.wait_done(n, max(120.0, n / 50))
            row.throughput = n / (last - ready)
            logger.info("%s drained %d at %.0f tasks/s", row.name, n, row.throughput)
        except Exception as error:
            row.error = _failure(variant, error)
        finally:
            with contextlib.suppress(Exception):
                variant.reset()
        return row

    def run_slow_backlog(self, n: int) -> float | str:
        """n naps of NAP_SECONDS enqueued at once on one worker process (the
        reconciler running): elapsed over the ideal n * NAP_SECONDS."""
        variant = OursChannels(self, task="nap")
        reconciler = ([PYTHON, "manage.py", "reconcile_tasks", "--loop"], "")
        try:
            with self.workers(variant, also=[reconciler]):
                variant.reset()
                first = time.time()
                variant.enqueue_many(n)
                ideal = n * queue_peers.NAP_SECONDS
                last = variant.wait_done(n, ideal * 3)
            return (last - first) / ideal
        except Exception as error:
            return _failure(variant, error)
        finally:
            with contextlib.suppress(Exception):
                variant.reset()

    def profile_noop(self, n: int) -> list[tuple[str, float]] | str:
        """Where a no-op's time goes in a worker process draining n tasks:
        py-spy samples of the process, by the part of the job system they
        are in."""
        variant = OursChannels(self)
        output = self.tmp / "profile.txt"
        try:
            variant.reset()
            variant.enqueue_many(n)
            with self.workers(variant) as (supervisor,):
                child = psutil.Process(supervisor.pid).children()[0].pid
                spy = [
                    str(VENV_BIN / "py-spy"), "record", "--pid", str(child),
                    "--rate", "500", "--format", "raw", "--nonblocking",
                    "--duration", "4", "--output", str(output),
                ]  # fmt: skip
                subprocess.run(spy, check=True, capture_output=True, timeout=60)
                variant.wait_done(n, max(60.0, n / 50))
            raw = output.read_text()
            if self.args.profile_out:
                Path(self.args.profile_out).write_text(raw)
            return profile_shares(raw)
        except Exception as error:
            return _failure(variant, error)
        finally:
            with contextlib.suppress(Exception):
                variant.reset()

    @contextlib.contextmanager
    def workers(self, variant: Variant, also=()):
        """Start the variant's worker commands (and ``also``), wait until
        they are ready, stop them all at the end."""
        started: list[ManagedProcess] = []
        try:
            commands = [*variant.workers(), *also]
            for index, (argv, _) in enumerate(commands):
                name = f"{variant.name.split()[0].lower()}-{index}"
                process = ManagedProcess(name, argv, self.env, self.tmp / "logs")
                logger.info(
                    "Started %s (pid %s): %s", name, process.pid, " ".join(argv)
                )
                self.processes.append(process)
                started.append(process)
            for process, (_, ready) in zip(started, commands, strict=True):
                if ready:
                    process.wait_ready(
                        ready,
                        timeout=60,
                        message=f"{process.name} ready",
                        count=variant.ready_count,
                    )
            yield started
        finally:
            for process in started:
                process.stop()


def _failure(variant: Variant, error: Exception) -> str:
    logger.exception("%s could not run", variant.name)
    return f"{type(error).__name__}: {error}"[:200]


# Parts of the job system a sampled stack can be in, most specific first:
# (label, function names, any of which in a frame puts the sample there).
PROFILE_PARTS = [
    ("signals and their log lines", ("_signal",)),
    ("task events (owner groups)", ("publish",)),
    ("claim: UPDATE ... RETURNING", ("claim_next",)),
    ("finish: UPDATE", ("succeed", "update_if_current")),
    ("connection health checks", ("close_old_connections",)),
    ("waiting for a wake-up", ("pop",)),
    ("running the task body", ("run_sync",)),
    ("monitor thread", ("_watch_forever",)),
]


def profile_shares(raw: str) -> list[tuple[str, float]]:
    """py-spy's raw (collapsed) stacks as the share of samples in each part."""
    counts: dict[str, int] = {}
    for line in raw.splitlines():
        stack, _, number = line.rpartition(" ")
        if not stack or not number.isdigit():
            continue
        functions = {frame.split(" (")[0] for frame in stack.split(";")}
        part = next(
            (label for label, names in PROFILE_PARTS if functions & set(names)),
            "the rest (event loop, thread hops, interpreter)",
        )
        counts[part] = counts.get(part, 0) + int(number)
    total = sum(counts.values()) or 1
    return sorted(
        ((part, count / total) for part, count in counts.items()),
        key=lambda item: -item[1],
    )


def print_table(rows: list[Row], notes: list[str], n: int, latency_n: int) -> None:
    by_name = {row.name: row for row in rows}

    def base(name):
        row = by_name.get(name)
        return row.throughput if row and row.throughput else None

    celery, dramatiq = base(PLAIN_CELERY), base(DRAMATIQ)

    def fmt(value, spec):
        return "-" if value is None else format(value, spec)

    header = ["variant", "tasks/s", "sync enq/s", "p50 ms", "p99 ms"]
    header += ["x Celery", "x Dramatiq"]
    table = []
    for row in rows:
        if row.error:
            table.append([row.name, f"did not run: {row.error}"])
            continue
        table.append(
            [
                row.name,
                fmt(row.throughput, ",.0f"),
                fmt(row.enqueue_rate, ",.0f"),
                fmt(row.p(50), ".2f"),
                fmt(row.p(99), ".2f"),
                fmt(celery and row.throughput / celery, ".2f"),
                fmt(dramatiq and row.throughput / dramatiq, ".2f"),
            ]
        )
    report.print_table(
        f"Queue bench: {n} no-op tasks per throughput run; latency of "
        f"{latency_n} tasks enqueued one at a time",
        header,
        table,
    )
    print()
    for row in rows:
        print(f"- {row.name}: {row.used}")
    for note in notes:
        print(f"- {note}")
    print()


@dataclass
class Scenarios:
    """What the scenarios after the table measured (None: not run)."""

    drain: list[Row] = field(default_factory=list)
    backlog: float | str | None = None
    profile: list[tuple[str, float]] | str | None = None


def print_scenarios(found: Scenarios, drain_n: int, backlog_n: int) -> None:
    if found.drain:
        by_name = {row.name: row for row in found.drain}
        celery = by_name.get(PLAIN_CELERY)
        dramatiq = by_name.get(DRAMATIQ)
        print(f"Drain: {drain_n:,} no-ops waiting before the workers start")
        print(f"  {'variant':<30} {'tasks/s':>8} {'x Celery':>9} {'x Dramatiq':>11}")
        for row in found.drain:
            if row.error:
                print(f"  {row.name:<30} did not run: {row.error}")
                continue
            print(
                f"  {row.name:<30} {row.throughput:>8,.0f} "
                f"{_ratio(row, celery):>9} {_ratio(row, dramatiq):>11}"
            )
        print()
    if isinstance(found.backlog, float):
        ideal = backlog_n * queue_peers.NAP_SECONDS
        print(
            f"Slow backlog: {backlog_n} x {queue_peers.NAP_SECONDS} s on one worker "
            f"process: {found.backlog * ideal:.1f} s, {found.backlog:.3f}x the "
            f"ideal {ideal:.0f} s"
        )
    elif found.backlog is not None:
        print(f"Slow backlog did not run: {found.backlog}")
    if isinstance(found.profile, list):
        print(f"\nWhere a no-op's time goes ({OURS_1}, py-spy samples while draining):")
        for part, share in found.profile:
            print(f"  {share:>6.1%}  {part}")
    elif found.profile is not None:
        print(f"\nProfile did not run: {found.profile}")
    print()


def _ratio(row: Row, base: Row | None) -> str:
    if base is None or base.error or not base.throughput:
        return "-"
    return f"{row.throughput / base.throughput:.2f}"


def print_targets(by_name: dict[str, Row], found: Scenarios) -> None:
    checks = _short_queue_checks(by_name) + _scenario_checks(found)
    print(f"Targets for {OURS_1} (and aims, not targets):")
    if not checks:
        print("  (not checked: a variant they need did not run)")
    for passed, text in checks:
        label = "    " if passed is None else ("PASS" if passed else "FAIL")
        print(f"  {label}  {text}")


def _short_queue_checks(by_name: dict[str, Row]) -> list[tuple[bool | None, str]]:
    ours, celery = _ok(by_name.get(OURS_1)), _ok(by_name.get(PLAIN_CELERY))
    celery_db = _ok(by_name.get(CELERY_DB))
    checks: list[tuple[bool | None, str]] = []
    if ours and celery:
        ratio = ours.throughput / celery.throughput
        checks += [
            (
                ratio >= TARGET_VS_CELERY,
                f"short-queue throughput {ratio:.2f}x plain Celery "
                f"(>= {TARGET_VS_CELERY:.1f}x)",
            ),
            (
                ours.p(99) <= celery.p(99),
                f"p99 {ours.p(99):.2f} ms vs plain Celery {celery.p(99):.2f} ms "
                "(no worse)",
            ),
            (
                ours.enqueue_rate >= celery.enqueue_rate,
                f"sync enqueue {ours.enqueue_rate:,.0f}/s vs Celery apply_async "
                f"{celery.enqueue_rate:,.0f}/s (>=)",
            ),
        ]
    if ours and celery_db:
        ratio = ours.throughput / celery_db.throughput
        checks.append(
            (
                ratio >= TARGET_VS_CELERY_DB,
                f"throughput {ratio:.2f}x Celery with db results "
                f"(>= {TARGET_VS_CELERY_DB:.1f}x)",
            )
        )
    return checks


def _scenario_checks(found: Scenarios) -> list[tuple[bool | None, str]]:
    checks: list[tuple[bool | None, str]] = []
    drained = {row.name: row for row in found.drain if not row.error}
    ours, celery = drained.get(OURS_1), drained.get(PLAIN_CELERY)
    if ours and celery:
        ratio = ours.throughput / celery.throughput
        checks.append(
            (
                ratio >= TARGET_DRAIN_VS_CELERY,
                f"drain {ratio:.2f}x plain Celery's (>= {TARGET_DRAIN_VS_CELERY:.1f}x)",
            )
        )
    two, dramatiq = drained.get(OURS_2), drained.get(DRAMATIQ)
    if two and dramatiq:
        ratio = two.throughput / dramatiq.throughput
        checks.append((None, f"aim: {OURS_2} drains at {ratio:.2f}x Dramatiq's"))
    if isinstance(found.backlog, float):
        checks.append(
            (
                found.backlog <= TARGET_BACKLOG_VS_IDEAL,
                f"slow backlog {found.backlog:.3f}x the ideal (<= "
                f"{TARGET_BACKLOG_VS_IDEAL}x)",
            )
        )
    return checks


def _ok(row: Row | None) -> Row | None:
    return row if row is not None and not row.error else None


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short runs of everything")
    parser.add_argument("--tasks", type=int, help="no-op tasks per throughput run")
    parser.add_argument(
        "--latency-tasks", type=int, help="tasks per latency run (default 200)"
    )
    parser.add_argument(
        "--only",
        action="append",
        metavar="TEXT",
        help="run only the variants and scenarios (drain, backlog, profile) "
        "whose name contains TEXT (case-insensitive; repeatable), e.g. "
        "--only channels --only plain",
    )
    parser.add_argument(
        "--database",
        choices=["sqlite", "postgres"],
        default="sqlite",
        help="where the records go: SQLite (default) or a PostgreSQL server "
        "the bench starts",
    )
    parser.add_argument(
        "--profile-out",
        metavar="FILE",
        help="also write the profile's raw py-spy samples (collapsed stacks) here",
    )
    args = parser.parse_args(argv)
    if args.tasks is None:
        args.tasks = 300 if args.quick else 2000
    if args.latency_tasks is None:
        args.latency_tasks = 100 if args.quick else 200
    if args.tasks < 2 or args.latency_tasks < 1:
        parser.error("--tasks must be >= 2 and --latency-tasks >= 1")
    args.drain_tasks = 2_000 if args.quick else DRAIN_TASKS
    args.backlog_tasks = 30 if args.quick else BACKLOG_TASKS
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    bench = None
    rows: list[Row] = []
    found = Scenarios()
    began = time.monotonic()
    with prepared("queue", args.database) as ready:
        # The project's Celery app becomes the current app of this process:
        # CeleryBackend and the plain shared task publish through it.
        import project.celery  # noqa: F401

        bench = Bench(args, ready.tmp, ready.redis_url, ready.env)
        try:
            load_before = os.getloadavg()[0]
            rows = run_table(bench, args)
            found = run_scenarios(bench, args)
            bench.notes.append(
                f"machine: {os.cpu_count()} CPUs, 1-min load average "
                f"{load_before:.2f} before, {os.getloadavg()[0]:.2f} after "
                "(other work skews every number)"
            )
        finally:
            for process in bench.processes:
                process.stop()
    durable = " (durable settings)" if args.database == "postgres" else ""
    print(f"\nRecords on {args.database}{durable}")
    if rows:
        print_table(rows, bench.notes, args.tasks, args.latency_tasks)
    print_scenarios(found, args.drain_tasks, args.backlog_tasks)
    print_targets({row.name: row for row in rows}, found)
    logger.info("Bench took %.0f s", time.monotonic() - began)
    return 0


def run_table(bench: Bench, args) -> list[Row]:
    variants: list[Variant] = [
        OursChannels(bench),
        OursChannels(bench, processes=2),
        OursChannels(bench, concurrency=4),
        OursCelery(bench),
        PlainCelery(bench),
        CeleryDb(bench),
        Dramatiq(bench),
        StockChannels(bench),
    ]
    rows = []
    for variant in variants:
        if not _wanted(args, variant.name):
            continue
        missing = missing_modules(variant)
        if missing:
            rows.append(
                Row(variant.name, variant.used, error=f"{missing} not installed")
            )
            continue
        logger.info("Running %s", variant.name)
        rows.append(bench.run_variant(variant))
    return rows


def run_scenarios(bench: Bench, args) -> Scenarios:
    found = Scenarios()
    drainers = [
        OursChannels(bench),
        OursChannels(bench, processes=2),
        PlainCelery(bench),
        Dramatiq(bench),
    ]
    for variant in drainers:
        if _wanted(args, "drain", variant.name) and not missing_modules(variant):
            logger.info("Drain: %s", variant.name)
            found.drain.append(bench.run_drain(variant, args.drain_tasks))
    if _wanted(args, "slow backlog"):
        logger.info("Slow backlog")
        found.backlog = bench.run_slow_backlog(args.backlog_tasks)
    if _wanted(args, "profile"):
        logger.info("Profile")
        found.profile = bench.profile_noop(PROFILE_TASKS)
    return found


def _wanted(args, *names: str) -> bool:
    if not args.only:
        return True
    return any(text.lower() in name.lower() for text in args.only for name in names)


def missing_modules(variant: Variant) -> str:
    import importlib.util

    needs = {CeleryDb: ["sqlalchemy"], Dramatiq: ["dramatiq"]}.get(type(variant), [])
    missing = [name for name in needs if importlib.util.find_spec(name) is None]
    return ", ".join(missing)


if __name__ == "__main__":
    sys.exit(main())
