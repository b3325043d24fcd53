"""Channel-layer routes (``channel`` protocol) for the job system's queues.

``manage.py runworker`` (tasks.worker) reads the queues directly; these routes
let the stock Channels worker, or any ASGI server with a worker mode, run the
same messages through the application.
"""

from channels.consumer import AsyncConsumer

from tasks import execution


class TaskRunConsumer(AsyncConsumer):
    """Handles ``{"type": "task.run", "id": ...}`` messages."""

    async def task_run(self, message):
        await execution.arun(message["id"], worker_id=f"consumer:{self.channel_name}")


channel_routes = {
    "thumbnailer": TaskRunConsumer.as_asgi(),
    "default": TaskRunConsumer.as_asgi(),
}
