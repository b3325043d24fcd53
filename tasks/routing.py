"""Channel-layer routes (``channel`` protocol) for the job system's queues.

``manage.py runworker`` (tasks.worker) reads the queues itself; these routes
let the stock Channels worker, or any ASGI server with a worker mode, run the
same messages through the application: each claims the record it names.
"""

from asgiref.sync import sync_to_async
from channels.consumer import AsyncConsumer

from tasks import execution, lifecycle
from tasks.backends import channels_queues
from tasks.monitor import Monitor

# Heartbeats only: time limits and cancels need tasks.worker's process model.
monitor = Monitor()


class TaskRunConsumer(AsyncConsumer):
    """Handles ``{"type": "task.run", "id": ...}`` messages."""

    async def task_run(self, message):
        worker_id = f"consumer:{self.channel_name}"
        record = await sync_to_async(lifecycle.claim)(message["id"], worker_id)
        if record is None:
            return
        with monitor.watching(record):
            if execution.is_coroutine_task(record):
                await execution.run_async(record)
            else:
                await sync_to_async(execution.run_sync)(record)


def channel_routes() -> dict:
    """A route per queue of the configured Channels backends (settings'
    ``TASKS``), for ``ChannelNameRouter``."""
    return dict.fromkeys(channels_queues(), TaskRunConsumer.as_asgi())
