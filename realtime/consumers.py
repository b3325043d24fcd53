"""Websocket consumers."""

import asyncio
import json
import time
from collections import deque
from datetime import timedelta
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import (
    AsyncJsonWebsocketConsumer,
    AsyncWebsocketConsumer,
)
from django.conf import settings
from django.db import DatabaseError
from django.utils import timezone
from prometheus_client import Gauge

from realtime.middleware import CLOSE_UNAVAILABLE
from tasks import outage
from tasks.events import owner_group, task_group, task_update
from tasks.models import TaskRecord

# Summed over the live processes of the host by /metrics (multi-process mode).
open_sockets = Gauge(
    "websocket_connections", "Open websocket connections.", multiprocess_mode="livesum"
)

# Close codes from RFC 6455, and ours (4000-4999 are the application's).
CLOSE_UNSUPPORTED_DATA = 1003
CLOSE_MESSAGE_TOO_BIG = 1009
CLOSE_UNAUTHENTICATED = 4401  # not signed in (any more): log in again
CLOSE_TOO_MANY_FRAMES = 4429  # more than REALTIME_MAX_FRAMES per window
# CLOSE_UNAVAILABLE (4503, realtime.middleware): the database is down.


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
    """Live job events at /ws/jobs/ for the signed-in user (the protocol is
    in the README: snapshot, sequence numbers, subscribe, limits).

    By default a socket follows every task of its user; opened with
    ``?follow=subscribed`` it follows only the tasks it subscribes to. Each
    task event is sent at most once per socket and never older than what the
    socket was already sent (it reaches the consumer once per group it is in,
    and may race the snapshot).
    """

    async def connect(self):
        self.last_sent = time.monotonic()
        self.joined: list[str] = []
        self.sent_seq: dict[str, int] = {}  # task id: newest seq sent
        self.muted: set[str] = set()  # tasks unsubscribed from
        self.sent_images: set[tuple] = set()
        self.frames: deque[float] = deque()
        self.pinger: asyncio.Task | None = None
        await self.accept()
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            # After the handshake, so a page can tell "log in again" apart
            # from a refused origin (403) or a network error (1006).
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        tasks = []
        if self.follows_all:
            await self.join(owner_group(user.pk))  # first: no event is missed
            tasks = await self.unless_unavailable(snapshot(user))
            if tasks is UNAVAILABLE:
                return
        for state in tasks:
            self.sent_seq[state["id"]] = state["seq"]
        await self.send_json({"type": "snapshot", "tasks": tasks})
        self.pinger = asyncio.create_task(self.ping_when_idle())

    async def disconnect(self, code):
        if self.pinger is not None:
            self.pinger.cancel()
        for group in self.joined:
            await self.channel_layer.group_discard(group, self.channel_name)

    async def websocket_receive(self, message):
        if self.flooding():
            await self.close(code=CLOSE_TOO_MANY_FRAMES)
            return
        await super().websocket_receive(message)

    async def receive(self, text_data=None, bytes_data=None, **kwargs):
        try:
            content = json.loads(text_data or "")
        except ValueError:
            content = None
        await self.receive_json(content)

    async def receive_json(self, content, **kwargs):
        action, task_id = _request(content)
        if action is None:
            await self.send_error(USAGE)
        elif not task_id:
            await self.send_error(f'"{action}" needs a "task": the id of your task.')
        elif action == "unsubscribe":
            await self.unsubscribe(task_id)
        else:
            own = own_task_state(self.scope["user"], task_id)
            if (state := await self.unless_unavailable(own)) is UNAVAILABLE:
                return
            if state is None:
                await self.send_error(f"No task of yours has the id {task_id[:64]!r}.")
            else:
                await self.subscribe(task_id, state, legacy=action == "watch")

    async def subscribe(self, task_id: str, state: dict, legacy: bool) -> None:
        self.muted.discard(task_id)
        await self.join(task_group(task_id))
        if legacy:
            await self.send_json({"type": "watching", "id": task_id})
            return
        self.sent_seq[task_id] = max(self.sent_seq.get(task_id, -1), state["seq"])
        await self.send_json({"type": "subscribed", "task": task_id, "state": state})

    async def unsubscribe(self, task_id: str) -> None:
        group = task_group(task_id)
        if group in self.joined:
            await self.channel_layer.group_discard(group, self.channel_name)
            self.joined.remove(group)
        self.muted.add(task_id)
        await self.send_json({"type": "unsubscribed", "task": task_id})

    async def task_update(self, event):
        task_id, seq = event["id"], event.get("seq", 0)
        if task_id in self.muted or self.sent_seq.get(task_id, -1) >= seq:
            return  # unsubscribed, a duplicate, or older than what was sent
        self.sent_seq[task_id] = seq
        await self.send_json(event)

    async def image_event(self, event):
        key = (event["type"], event["id"], event.get("task"))
        if event.get("task") in self.muted or key in self.sent_images:
            return
        self.sent_images.add(key)
        await self.send_json(event)

    image_added = image_ready = image_failed = image_event

    async def send(self, text_data=None, bytes_data=None, close=False):
        self.last_sent = time.monotonic()
        await super().send(text_data, bytes_data, close)

    async def ping_when_idle(self) -> None:
        """Send {"type": "ping"} to a socket idle this long, so that proxies
        keep it open and the client can tell a live socket from a dead one."""
        every = settings.REALTIME_PING_SECONDS
        while True:
            idle = time.monotonic() - self.last_sent
            if idle >= every:
                await self.send_json({"type": "ping"})
                idle = 0.0
            await asyncio.sleep(every - idle)

    @property
    def follows_all(self) -> bool:
        query = parse_qs(self.scope.get("query_string", b"").decode())
        return query.get("follow", ["all"])[0] != "subscribed"

    def flooding(self) -> bool:
        now, window = time.monotonic(), settings.REALTIME_FRAMES_WINDOW
        self.frames.append(now)
        while self.frames and self.frames[0] <= now - window:
            self.frames.popleft()
        return len(self.frames) > settings.REALTIME_MAX_FRAMES

    async def join(self, group):
        if group not in self.joined:
            await self.channel_layer.group_add(group, self.channel_name)
            self.joined.append(group)

    async def send_error(self, message):
        await self.send_json({"type": "error", "error": message})

    async def unless_unavailable(self, read):
        """Await a database ``read``; through an outage, close the socket
        with CLOSE_UNAVAILABLE (the page reconnects, and gets a fresh
        snapshot) and return UNAVAILABLE."""
        try:
            return await read
        except DatabaseError as error:
            if not outage.absorb_database_outage(error):
                raise
            await self.close(code=CLOSE_UNAVAILABLE)
            return UNAVAILABLE


UNAVAILABLE = object()  # what a database read gave while the database was down
USAGE = 'Send a JSON object: {"action": "subscribe", "task": "<task id>"}.'
ACTIONS = ("subscribe", "unsubscribe")


def _request(content) -> tuple[str | None, str]:
    """(action, task id) of a client frame; (None, "") when it is not one."""
    if not isinstance(content, dict):
        return None, ""
    if "watch" in content:  # the first protocol's {"watch": "<id>"}
        task_id = content["watch"]
        return ("watch", task_id) if isinstance(task_id, str) else (None, "")
    action, task_id = content.get("action"), content.get("task")
    if action not in ACTIONS:
        return None, ""
    return action, task_id if isinstance(task_id, str) else ""


@database_sync_to_async
def snapshot(user) -> list[dict]:
    since = timezone.now() - timedelta(seconds=settings.REALTIME_SNAPSHOT_SECONDS)
    records = TaskRecord.objects.for_owner(user).unfinished_or_since(since)
    return [task_update(r) for r in records[: settings.REALTIME_SNAPSHOT_LIMIT]]


@database_sync_to_async
def own_task_state(user, task_id: str) -> dict | None:
    record = TaskRecord.objects.for_owner(user).filter(pk=task_id).first()
    return None if record is None else task_update(record)


class NotFoundConsumer(AsyncWebsocketConsumer):
    """Refuses the handshake for any path without a consumer (HTTP 403)."""

    async def connect(self):
        await self.close()
