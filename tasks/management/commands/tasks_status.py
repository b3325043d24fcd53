"""``manage.py tasks_status``: per-queue depth as a table."""

from django.core.management.base import BaseCommand
from django.db.models import Count

from tasks import transport
from tasks.backends import channels_aliases
from tasks.models import Status, TaskRecord

COLUMNS = ["queue", "backend", "channel", *[s.value for s in Status]]


class Command(BaseCommand):
    help = "Show each queue's channel depth and task records by status."

    def handle(self, *args, **options):
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
        self.stdout.write(_format(table) if len(table) > 1 else "No tasks recorded.")


def _format(table: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True))
        for row in table
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
