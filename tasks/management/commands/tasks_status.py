"""``manage.py tasks_status``: per-queue depth, then the schedules, as tables."""

from django.core.management.base import BaseCommand
from django.db.models import Count

from tasks import schedules, transport
from tasks.backends import channels_aliases
from tasks.models import ScheduleState, Status, TaskRecord

COLUMNS = ["queue", "backend", "channel", *[s.value for s in Status]]
SCHEDULE_COLUMNS = ["name", "task", "schedule", "last run", "next run"]


class Command(BaseCommand):
    help = (
        "Show each queue's channel depth and task records by status, "
        "and each TASKS_SCHEDULE entry's last and next run."
    )

    def handle(self, *args, **options):
        queues = _queue_table()
        self.stdout.write(_format(queues) if len(queues) > 1 else "No tasks recorded.")
        table = _schedule_table()
        self.stdout.write("")
        self.stdout.write(_format(table) if len(table) > 1 else "No schedules.")


def _queue_table() -> list[list[str]]:
    counts: dict[tuple[str, str], dict[str, int]] = {}
    rows = TaskRecord.objects.values("queue_name", "backend", "status").annotate(
        n=Count("pk")
    )
    for row in rows:
        key = (row["queue_name"], row["backend"])
        counts.setdefault(key, {})[row["status"]] = row["n"]
    depths = transport.depths(sorted({q for q, _ in counts}))
    channels = channels_aliases()
    table = [COLUMNS]
    for (queue, backend), by_status in sorted(counts.items()):
        depth = depths.get(queue, "?") if backend in channels else "-"
        table.append(
            [
                queue,
                backend,
                str(depth),
                *(str(by_status.get(s, 0)) for s in COLUMNS[3:]),
            ]
        )
    return table


def _schedule_table() -> list[list[str]]:
    """Every entry of settings, with its row's times (a new entry gets its
    row, and its next run, at beat's next check)."""
    states = ScheduleState.objects.in_bulk()
    table = [SCHEDULE_COLUMNS]
    for schedule in schedules.configured():
        state = states.get(schedule.name)
        last = state.last_run_at if state else None
        table.append(
            [
                schedule.name,
                schedule.task_path,
                schedule.timing,
                last.isoformat(timespec="seconds") if last else "never",
                state.next_run_at.isoformat(timespec="seconds")
                if state
                else "not yet seen by beat",
            ]
        )
    return table


def _format(table: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True))
        for row in table
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
