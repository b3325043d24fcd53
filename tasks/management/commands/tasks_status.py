"""``manage.py tasks_status``: per-queue depth as a table."""

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.core.management.base import BaseCommand
from django.db.models import Count

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
        depths = async_to_sync(_channel_depths)(sorted({q for q, _ in counts}))
        table = [COLUMNS]
        for (queue, backend), by_status in sorted(counts.items()):
            depth = depths.get(queue, "?") if backend != "guaranteed" else "-"
            table.append(
                [
                    queue,
                    backend,
                    str(depth),
                    *(str(by_status.get(s, 0)) for s in COLUMNS[3:]),
                ]
            )
        self.stdout.write(_format(table) if len(table) > 1 else "No tasks recorded.")


async def _channel_depths(queues: list[str]) -> dict[str, int]:
    """Messages waiting on each queue's channel (channels-redis sorted sets)."""
    layer = get_channel_layer()
    depths = {}
    try:
        connection = layer.connection(0)
        for queue in queues:
            depths[queue] = await connection.zcard(layer.prefix + queue)
    except Exception:
        return {}
    return depths


def _format(table: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True))
        for row in table
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
