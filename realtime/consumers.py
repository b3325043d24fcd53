"""Websocket consumers."""

import json

from channels.db import database_sync_to_async
from channels.generic.websocket import (
    AsyncJsonWebsocketConsumer,
    AsyncWebsocketConsumer,
)
from django.conf import settings
from prometheus_client import Gauge

from tasks.events import owner_group, task_group
from tasks.models import TaskRecord

# Summed over the live processes of the host by /metrics (multi-process mode).
open_sockets = Gauge(
    "websocket_connections", "Open websocket connections.", multiprocess_mode="livesum"
)

# Close codes from RFC 6455.
CLOSE_UNSUPPORTED_DATA = 1003
CLOSE_MESSAGE_TOO_BIG = 1009


class CountedSockets:
    """Counts this consumer's socket in ``open_sockets`` while it is open."""

    _counted = False

    async def websocket_connect(self, message):
        open_sockets.inc()
        self._counted = True
        await super().websocket_connect(message)

    async def websocket_disconnect(self, message):
        if self._counted:
            open_sockets.dec()
            self._counted = False
        await super().websocket_disconnect(message)


class EchoConsumer(CountedSockets, AsyncWebsocketConsumer):
    """The seed's public demo at /chat/: replies ``You said: X`` to a text frame ``X``.

    Needs no login. Bad frames get a reason the client can read, then a close
    code where the connection cannot go on.
    """

    async def receive(self, text_data=None, bytes_data=None):
        if bytes_data is not None:
            await self.send("Error: binary frames are not supported; send text.")
            await self.close(code=CLOSE_UNSUPPORTED_DATA)
        elif not text_data:
            await self.send("Error: empty message; send some text.")
        elif len(text_data) > settings.ECHO_MAX_CHARS:
            await self.send(
                f"Error: message too long ({len(text_data)} characters; "
                f"the limit is {settings.ECHO_MAX_CHARS})."
            )
            await self.close(code=CLOSE_MESSAGE_TOO_BIG)
        else:
            await self.send(f"You said: {text_data}")


class JobEventsConsumer(CountedSockets, AsyncJsonWebsocketConsumer):
    """Live job events at /ws/jobs/ for the signed-in user.

    Forwards every ``task.update`` of the user's own tasks. A client may also
    send ``{"watch": "<task id>"}`` to follow one task it owns.
    """

    async def connect(self):
        self.joined = []
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close()  # before accept: the handshake is refused (403)
            return
        await self.join(owner_group(user.pk))
        await self.accept()

    async def disconnect(self, code):
        for group in self.joined:
            await self.channel_layer.group_discard(group, self.channel_name)

    async def receive(self, text_data=None, bytes_data=None, **kwargs):
        try:
            content = json.loads(text_data or "")
        except ValueError:
            content = None
        await self.receive_json(content)

    async def receive_json(self, content, **kwargs):
        task_id = content.get("watch") if isinstance(content, dict) else None
        if not isinstance(task_id, str) or not task_id:
            await self.send_error('Send {"watch": "<task id>"} as JSON text.')
        elif not await owns_task(self.scope["user"], task_id):
            await self.send_error(f"No task of yours has the id {task_id[:64]!r}.")
        else:
            await self.join(task_group(task_id))
            await self.send_json({"type": "watching", "id": task_id})

    async def task_update(self, event):
        await self.send_json(event)

    async def join(self, group):
        if group not in self.joined:
            await self.channel_layer.group_add(group, self.channel_name)
            self.joined.append(group)

    async def send_error(self, message):
        await self.send_json({"type": "error", "error": message})


@database_sync_to_async
def owns_task(user, task_id):
    return TaskRecord.objects.for_owner(user).filter(pk=task_id).exists()


class NotFoundConsumer(AsyncWebsocketConsumer):
    """Refuses the handshake for any path without a consumer (HTTP 403)."""

    async def connect(self):
        await self.close()
