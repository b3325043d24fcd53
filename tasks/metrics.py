"""Prometheus metrics of the job system (prometheus_client).

Two sources, each for what it does best:

- Events (enqueued, started, finished, failed; durations; waits before a
  start) are counted where they happen, by tasks.lifecycle, in whichever
  process that is: the web process enqueues, a worker claims and finishes.
  prometheus_client's multi-process mode (PROMETHEUS_MULTIPROC_DIR, one
  folder per host, set in settings) adds up every process of the host: a
  histogram needs each observation when it happens, which no later query of
  the records can give back.
- State (tasks waiting per queue, the oldest one's age, tasks running, live
  worker processes and their heartbeats) is read at scrape time from the
  records and the worker registry, so it is the same whichever host is
  scraped.
"""

from __future__ import annotations

import logging
import os
import re
from datetime import datetime

from django.db.models import Count
from django.utils import timezone
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily

from tasks import registry
from tasks.models import Status, TaskRecord

logger = logging.getLogger(__name__)

LABELS = ("queue", "task", "backend")
# Seconds: a no-op's milliseconds up to the default 30-minute time limit.
BUCKETS = (0.005, 0.025, 0.1, 0.5, 1, 5, 15, 60, 300, 1800)

enqueued = Counter("tasks_enqueued", "Tasks enqueued.", LABELS)
started = Counter("tasks_started", "Attempts started.", LABELS)
finished = Counter("tasks_finished", "Tasks finished.", (*LABELS, "status"))
failed = Counter("tasks_failed", "Tasks finished FAILED.", LABELS)
duration = Histogram(
    "tasks_duration_seconds", "An attempt's run time.", LABELS, buckets=BUCKETS
)
wait = Histogram(
    "tasks_wait_seconds",
    "From when a task could run to when an attempt started.",
    ("queue", "backend"),
    buckets=BUCKETS,
)


def on_enqueued(records: list[TaskRecord]) -> None:
    counts: dict[tuple[str, str, str], int] = {}
    for record in records:
        labels = _labels(record)
        counts[labels] = counts.get(labels, 0) + 1
    for labels, count in counts.items():
        enqueued.labels(*labels).inc(count)


def on_started(record: TaskRecord) -> None:
    started.labels(*_labels(record)).inc()
    waited = _seconds(record.available_at, record.last_attempted_at)
    wait.labels(record.queue_name, record.backend).observe(waited)


def on_finished(record: TaskRecord) -> None:
    labels = _labels(record)
    finished.labels(*labels, str(record.status)).inc()
    if record.status == Status.FAILED:
        failed.labels(*labels).inc()
    if record.last_attempted_at is not None:
        ran = _seconds(record.last_attempted_at, record.finished_at)
        duration.labels(*labels).observe(ran)


def exposition() -> bytes:
    """Every metric, in Prometheus' text format."""
    scrape = CollectorRegistry()
    folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if folder:
        _forget_dead_processes(folder)
        multiprocess.MultiProcessCollector(scrape, path=folder)
    scrape.register(StateCollector())
    return generate_latest(scrape)


class StateCollector:
    """Waiting and running tasks from the records; workers from the registry."""

    def collect(self):
        now = timezone.now()
        depth = GaugeMetricFamily(
            "tasks_queue_depth", "Tasks due and waiting.", labels=["queue", "backend"]
        )
        oldest = GaugeMetricFamily(
            "tasks_oldest_ready_age_seconds",
            "How long the longest-waiting due task has waited.",
            labels=["queue", "backend"],
        )
        for row in TaskRecord.objects.backlog(now):
            labels = [row["queue_name"], row["backend"]]
            depth.add_metric(labels, row["count"])
            oldest.add_metric(labels, _seconds(row["oldest"], now))
        running = GaugeMetricFamily(
            "tasks_running", "Attempts running.", labels=["queue", "backend"]
        )
        for row in _count(TaskRecord.objects.running()):
            running.add_metric([row["queue_name"], row["backend"]], row["count"])
        yield from (depth, oldest, running, *_worker_metrics())


def _worker_metrics():
    try:
        live = registry.alive()
    except Exception as error:  # Redis down: /healthz says so; omit these
        logger.warning("Worker registry unreadable: %s", error)
        return ()
    count = GaugeMetricFamily("tasks_workers", "Live worker processes.")
    count.add_metric([], len(live))
    beats = GaugeMetricFamily(
        "tasks_worker_heartbeat_age_seconds",
        "Seconds since each live worker process last reported.",
        labels=["worker"],
    )
    for worker_id, age in sorted(live.items()):
        beats.add_metric([worker_id], age)
    return count, beats


def _count(records):
    rows = records.values("queue_name", "backend").annotate(count=Count("pk"))
    return rows.order_by()


def _labels(record: TaskRecord) -> tuple[str, str, str]:
    return record.queue_name, record.task_path, record.backend


def _seconds(start: datetime | None, end: datetime | None) -> float:
    if start is None or end is None:
        return 0.0
    return max(0.0, (end - start).total_seconds())


_PID = re.compile(r"_(\d+)\.db$")


def _forget_dead_processes(folder: str) -> None:
    """Drop the live gauges of processes that are gone (a restarted Daphne's
    old connection count would otherwise be added forever)."""
    pids = {int(m.group(1)) for name in os.listdir(folder) if (m := _PID.search(name))}
    for pid in pids:
        if not _alive(pid):
            multiprocess.mark_process_dead(pid, folder)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
