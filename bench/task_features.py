"""Benchmark bulk enqueue and retention.

    .venv/bin/python bench/task_features.py [--tasks N] [--records N]
                                            [--database sqlite|postgres]
                                            [--only enqueue|retention]

Starts its own Redis (loopback, free port) and database (SQLite in a temp
directory, or a PostgreSQL server of its own), migrates it, with the
project's default settings, and measures:

- enqueue: N (10,000) no-op tasks enqueued from this process with no worker
  running, one by one (``task.enqueue()`` in a loop: an INSERT, a commit and
  a wake-up each), with ``tasks.enqueue_many`` (one statement, one round
  trip), and with Celery's ``apply_async`` in a loop (a plain shared task,
  the baseline Celery users know). A thread empties the wake-up channel as
  workers would, so no variant pays for a full channel. Target: enqueue_many
  >= 5x one by one.
- retention: R (1,000,000) finished records in the table, half of them past
  ``TASKS_RESULT_TTL``. The claim and finish latency of tasks run one at a
  time from this process, first alone, then while ``manage.py prune_tasks``
  deletes the expired half in another process. Target: p50 and p99 within
  1.25x of the run alone.

Prints one table per part, ratios against the baseline of the same run, and
PASS/FAIL per target; always exits 0 (timings on shared machines are noisy).
Every process it starts is stopped by its PID at the end. Not a test.
"""

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != HERE]

import argparse  # noqa: E402
import logging  # noqa: E402
import math  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402

from tqdm import tqdm  # noqa: E402

from bench.environment import Prepared, prepared  # noqa: E402
from bench.report import print_table  # noqa: E402
from tests.support import ManagedProcess, Repeating  # noqa: E402

logger = logging.getLogger("bench.task_features")

PYTHON = str(Path(sys.executable).parent / "python")
TASKS = 10_000
RECORDS = 1_000_000
LATENCY_RUNS = 3_000
TARGET_BULK_VS_ONE_BY_ONE = 5.0
TARGET_LATENCY_WHILE_PRUNING = 1.25


def main(argv=None) -> int:
    args = parse_args(argv)
    processes: list[ManagedProcess] = []
    verdicts: list[str] = []
    with prepared("features", args.database) as ready:
        import project.celery  # noqa: F401 (the app plain_noop publishes through)

        print(f"\nRecords on {args.database}")
        try:
            if args.only in (None, "enqueue"):
                verdicts.append(bench_enqueue(args.tasks))
            if args.only in (None, "retention"):
                verdicts.append(bench_retention(args.records, ready, processes))
        finally:
            for process in processes:
                process.stop()
    print("\nTargets")
    for verdict in verdicts:
        print(f"- {verdict}")
    return 0


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=TASKS)
    parser.add_argument("--records", type=int, default=RECORDS)
    parser.add_argument("--database", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--only", choices=["enqueue", "retention"])
    return parser.parse_args(argv)


# --- Enqueue -------------------------------------------------------------------


def bench_enqueue(n: int) -> str:
    from bench import queue_peers
    from tasks.models import TaskRecord

    noop, guaranteed = queue_peers.noop, queue_peers.guaranteed_noop
    plain = queue_peers.plain_noop
    # Each variant enqueues k tasks.
    variants: list[tuple[str, Callable[[int], object]]] = [
        ("one by one (ChannelsBackend)", lambda k: [noop.enqueue() for _ in range(k)]),
        ("enqueue_many (ChannelsBackend)", lambda k: _many(noop, k)),
        (
            "one by one (CeleryBackend)",
            lambda k: [guaranteed.enqueue() for _ in range(k)],
        ),
        ("enqueue_many (CeleryBackend)", lambda k: _many(guaranteed, k)),
        ("plain Celery apply_async loop", lambda k: [plain.delay() for _ in range(k)]),
    ]
    # Warm up every path (connections, prepared SQL, the Celery producer).
    for _name, run in variants:
        run(50)
    TaskRecord.objects.all().delete()
    _empty_broker()
    seconds = {}
    with _channel_emptier():
        for name, run in variants:
            started = time.perf_counter()
            run(n)
            seconds[name] = time.perf_counter() - started
            logger.info("%s: %.0f tasks/s", name, n / seconds[name])
            TaskRecord.objects.all().delete()
            _empty_broker()
    base = seconds["one by one (ChannelsBackend)"]
    rows = [
        [name, f"{took:.2f}", f"{n / took:,.0f}", f"{base / took:.2f}"]
        for name, took in seconds.items()
    ]
    print_table(
        f"Enqueue: {n:,} no-op tasks from one process, no worker running",
        ["variant", "seconds", "tasks/s", "x one by one"],
        rows,
    )
    ratio = base / seconds["enqueue_many (ChannelsBackend)"]
    return _verdict(
        f"enqueue_many {ratio:.1f}x one by one (ChannelsBackend)",
        ratio >= TARGET_BULK_VS_ONE_BY_ONE,
        f">= {TARGET_BULK_VS_ONE_BY_ONE:g}x",
    )


def _many(task, k: int):
    import tasks

    return tasks.enqueue_many(task, [((), {})] * k)


def _channel_emptier() -> Repeating:
    """Empties the wake-up channel every few ms, as idle workers would."""
    import redis
    from channels.layers import get_channel_layer
    from django.conf import settings

    client = redis.Redis.from_url(settings.REDIS_URL)
    key = get_channel_layer().prefix + "default"
    return Repeating(lambda: client.delete(key), 0.005)


def _empty_broker() -> None:
    import redis
    from django.conf import settings

    redis.Redis.from_url(settings.REDIS_URL).flushdb()


# --- Retention -----------------------------------------------------------------


def bench_retention(records: int, ready: Prepared, processes: list) -> str:
    from datetime import timedelta

    from django.conf import settings

    expired_age = settings.TASKS_RESULT_TTL + timedelta(days=1)
    logger.info("Writing %s finished records", f"{records:,}")
    started = time.perf_counter()
    _fill(records, expired=records // 2, age=expired_age)
    logger.info("Written in %.0f s", time.perf_counter() - started)

    # Alone before and after the pass (the baseline is both: drift in the
    # machine's load between them shows as a wider baseline, not as pruning).
    alone = _claim_and_finish_latencies(LATENCY_RUNS // 2)
    pruner = ManagedProcess(
        "prune_tasks",
        [PYTHON, "manage.py", "prune_tasks"],
        ready.env,
        ready.tmp / "logs",
    )
    processes.append(pruner)
    before = _finished_count()
    pruning_started = time.perf_counter()
    during = _claim_and_finish_latencies(LATENCY_RUNS, while_=pruner.alive)
    pruner.stop()
    pass_seconds = time.perf_counter() - pruning_started
    deleted = before - _finished_count() + len(during)
    alone += _claim_and_finish_latencies(LATENCY_RUNS // 2)
    rows = []
    for name, values in (("alone", alone), ("while pruning", during)):
        rows.append(
            [
                name,
                str(len(values)),
                f"{_p(values, 50):.2f}",
                f"{_p(values, 99):.2f}",
                f"{_p(values, 50) / _p(alone, 50):.2f}",
                f"{_p(values, 99) / _p(alone, 99):.2f}",
            ]
        )
    print_table(
        f"Retention: claim + finish latency with {records:,} finished records "
        f"({records // 2:,} past retention)",
        ["run", "tasks", "p50 ms", "p99 ms", "x p50", "x p99"],
        rows,
    )
    print(
        f"- while measured, the prune pass deleted {deleted:,} records in "
        f"{pass_seconds:.0f} s ({deleted / pass_seconds:,.0f}/s; paced, it "
        "leaves the database to claims most of the time)"
    )
    worst = max(_p(during, 50) / _p(alone, 50), _p(during, 99) / _p(alone, 99))
    return _verdict(
        f"claim + finish while pruning {worst:.2f}x alone (worst of p50, p99)",
        worst <= TARGET_LATENCY_WHILE_PRUNING,
        f"<= {TARGET_LATENCY_WHILE_PRUNING:g}x",
    )


def _fill(records: int, *, expired: int, age) -> None:
    """``records`` SUCCESSFUL records in one INSERT ... SELECT, ``expired`` of
    them finished ``age`` ago and the rest an hour ago."""
    from django.db import connection

    from tasks.models import TaskRecord

    table = TaskRecord._meta.db_table
    now = time.time()
    old, recent = now - age.total_seconds(), now - 3600
    if connection.vendor == "postgresql":
        series = f"generate_series(1, {records}) AS n"
        stamp = f"to_timestamp(CASE WHEN n <= {expired} THEN {old} ELSE {recent} END)"
        row_id = "md5(n::text || random()::text)"
        select = f"SELECT {{columns}} FROM {series}"
    else:
        stamp = (
            f"strftime('%Y-%m-%d %H:%M:%f', CASE WHEN n <= {expired} THEN {old} "
            f"ELSE {recent} END, 'unixepoch')"
        )
        row_id = "lower(hex(randomblob(16)))"
        select = (
            "WITH RECURSIVE seq(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM seq "
            f"WHERE n < {records}) SELECT {{columns}} FROM seq"
        )
    values = {
        "id": row_id, "task_path": "'bench.queue_peers.noop'", "backend": "'default'",
        "queue_name": "'default'", "priority": "0", "args": "'[]'",
        "kwargs": "'{}'", "status": "'SUCCESSFUL'", "return_value": "'null'",
        "errors": "'[]'", "attempts": "1", "max_attempts": "3",
        "worker_ids": "'[\"bench\"]'", "claimed_by": "'bench'",
        "enqueued_at": stamp, "available_at": stamp, "sent_at": stamp,
        "started_at": stamp, "last_attempted_at": stamp, "heartbeat_at": stamp,
        "finished_at": stamp, "progress": "1", "progress_message": "''",
        "sequence": "3", "concurrency_key": "''",
    }  # fmt: skip
    if connection.vendor == "postgresql":
        values = {k: v.replace("'[]'", "'[]'::jsonb") for k, v in values.items()}
        for name in ("kwargs", "return_value", "worker_ids"):
            values[name] += "::jsonb"
    columns = ", ".join(values)
    with connection.cursor() as cursor:
        rows = select.format(columns=", ".join(values.values()))
        cursor.execute(f"INSERT INTO {table} ({columns}) {rows}")
        if connection.vendor == "postgresql":
            cursor.execute(f"ANALYZE {table}")
        else:
            cursor.execute("ANALYZE")


def _claim_and_finish_latencies(runs: int, while_=None) -> list[float]:
    """Seconds of claim + finish of ``runs`` tasks, one at a time (each
    enqueued first, untimed); stops early when ``while_()`` turns false."""
    from bench import queue_peers
    from tasks import lifecycle

    targets = (("default", "default"),)
    latencies = []
    for _ in tqdm(range(runs), unit="task", file=sys.stderr, leave=False):
        if while_ is not None and not while_():
            break
        queue_peers.noop.enqueue()
        started = time.perf_counter()
        record = lifecycle.claim_next(targets, "bench:1:latency")
        lifecycle.succeed(record, None)
        latencies.append(time.perf_counter() - started)
    return latencies


def _finished_count() -> int:
    from tasks.models import TaskRecord

    return TaskRecord.objects.filter(status="SUCCESSFUL").count()


# --- Output --------------------------------------------------------------------


def _p(values: list[float], q: float) -> float:
    """Percentile ``q`` in ms, nearest rank."""
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q / 100 * len(ordered))) - 1] * 1000


def _verdict(what: str, passed: bool, target: str) -> str:
    return f"{'PASS' if passed else 'FAIL'} {what} (target {target})"


if __name__ == "__main__":
    sys.exit(main())
