"""Live job events at /ws/jobs/ through the real ASGI stack and a real Redis."""

import time
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
from django.contrib.sessions.backends.db import SessionStore
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.utils import timezone

from project.asgi import application
from realtime.consumers import JobEventsConsumer
from tasks import execution, lifecycle
from tasks.events import owner_group, task_group
from tasks.models import TaskRecord
from tests.support import decoded, encoded, two_colour
from thumbnails import services
from thumbnails.models import Image

ORIGIN = (b"origin", b"http://127.0.0.1")

pytestmark = [
    pytest.mark.usefixtures("redis_server"),
    pytest.mark.django_db(transaction=True),
]


def event(task_id: str, status: str = "RUNNING", progress: float = 0.5, seq=1):
    return {
        "type": "task.update",
        "id": task_id,
        "task": "thumbnails.tasks.make_thumbnails",
        "queue": "thumbnailer",
        "status": status,
        "attempts": 1,
        "progress": progress,
        "message": "medium WEBP 640x480",
        "error": "",
        "seq": seq,
    }


@pytest.fixture
def alice(django_user_model):
    return django_user_model.objects.create_user("alice")  # no password: fast to make


@pytest.fixture
def bob(django_user_model):
    return django_user_model.objects.create_user("bob")  # no password: fast to make


@database_sync_to_async
def session_cookie(user) -> tuple[bytes, bytes]:
    """The cookie header of a logged-in session, as the login view leaves it."""
    session = SessionStore()
    session[SESSION_KEY] = str(user.pk)
    session[BACKEND_SESSION_KEY] = settings.AUTHENTICATION_BACKENDS[0]
    session[HASH_SESSION_KEY] = user.get_session_auth_hash()
    session.save()
    cookie = f"{settings.SESSION_COOKIE_NAME}={session.session_key}"
    return (b"cookie", cookie.encode())


@database_sync_to_async
def task_of(owner, **fields) -> str:
    record = TaskRecord.objects.create(
        task_path="thumbnails.tasks.make_thumbnails",
        backend="default",
        queue_name="thumbnailer",
        owner=owner,
        **fields,
    )
    return record.id


async def connect_as(user, path: str = "/ws/jobs/") -> WebsocketCommunicator:
    """Through the real application: origin check, session auth, routing.
    The snapshot the server sends first is left for the test to read."""
    headers = [ORIGIN, await session_cookie(user)]
    communicator = WebsocketCommunicator(application, path, headers=headers)
    connected, _ = await communicator.connect()
    assert connected
    return communicator


async def connected_as(user, path: str = "/ws/jobs/") -> WebsocketCommunicator:
    """connect_as, with the snapshot read (and checked to come first)."""
    communicator = await connect_as(user, path)
    assert (await communicator.receive_json_from(timeout=5))["type"] == "snapshot"
    return communicator


async def publish(group: str, message: dict) -> None:
    await get_channel_layer().group_send(group, message)


async def closed_with(communicator: WebsocketCommunicator) -> int:
    message = await communicator.receive_output(timeout=5)
    assert message["type"] == "websocket.close", message
    return message["code"]


async def test_anonymous_is_accepted_then_closed_with_4401():
    communicator = WebsocketCommunicator(application, "/ws/jobs/", headers=[ORIGIN])
    connected, _ = await communicator.connect()
    assert connected is True
    assert await closed_with(communicator) == 4401


async def test_a_stale_session_is_closed_with_4401(alice):
    # Given a session cookie made before the password changed
    cookie = await session_cookie(alice)
    alice.set_unusable_password()
    await sync_to_async(alice.save)()
    # Then the socket is accepted, then closed as signed out
    headers = [ORIGIN, cookie]
    communicator = WebsocketCommunicator(application, "/ws/jobs/", headers=headers)
    connected, _ = await communicator.connect()
    assert connected is True
    assert await closed_with(communicator) == 4401


async def test_a_foreign_origin_is_refused_at_the_handshake(alice):
    headers = [(b"origin", b"https://evil.example"), await session_cookie(alice)]
    communicator = WebsocketCommunicator(application, "/ws/jobs/", headers=headers)
    connected, code = await communicator.connect()
    assert connected is False
    assert code == 1000  # closed before accept: Daphne answers 403


async def test_the_snapshot_comes_first_with_unfinished_and_recent_tasks(alice, bob):
    # Given alice's tasks: waiting, running, finished just now, finished long
    # ago; and one of bob's
    now = timezone.now()
    waiting = await task_of(alice)
    running = await task_of(alice, status="RUNNING", sequence=4, progress=0.5)
    recent = await task_of(alice, status="SUCCESSFUL", finished_at=now)
    old = now - timedelta(hours=1)
    await task_of(alice, status="FAILED", finished_at=old, enqueued_at=old)
    await task_of(bob)
    # When she connects
    communicator = await connect_as(alice)
    # Then the first frame is a snapshot of the three that matter, newest
    # first, each in its current state
    snapshot = await communicator.receive_json_from(timeout=5)
    assert snapshot["type"] == "snapshot"
    states = {task["id"]: task for task in snapshot["tasks"]}
    assert [task["id"] for task in snapshot["tasks"]] == [recent, running, waiting]
    assert states[running]["status"] == "RUNNING"
    assert states[running]["seq"] == 4
    assert states[running]["progress"] == 0.5
    assert states[recent]["status"] == "SUCCESSFUL"
    # And an event older than the snapshot's state is dropped
    await publish(owner_group(alice.pk), event(running, seq=3))
    await publish(owner_group(alice.pk), event(running, "SUCCESSFUL", 1.0, seq=5))
    assert await communicator.receive_json_from(timeout=5) == event(
        running, "SUCCESSFUL", 1.0, seq=5
    )
    await communicator.disconnect()


async def test_each_state_reaches_a_socket_once_and_never_older(alice):
    # Given alice's socket, subscribed to her task as well (two groups)
    task_id = await task_of(alice)
    communicator = await connected_as(alice)
    await communicator.send_json_to({"action": "subscribe", "task": task_id})
    assert (await communicator.receive_json_from(timeout=5))["type"] == "subscribed"
    # When each event reaches both groups, one arrives twice, one out of order
    for seq in (2, 2, 4, 3, 5):
        await publish(owner_group(alice.pk), event(task_id, seq=seq))
        await publish(task_group(task_id), event(task_id, seq=seq))
    # Then the socket carries 2, 4 and 5, once each
    received = [
        (await communicator.receive_json_from(timeout=5))["seq"] for _ in range(3)
    ]
    assert received == [2, 4, 5]
    assert await communicator.receive_nothing(timeout=0.5)
    await communicator.disconnect()


async def test_owner_receives_events_of_own_tasks(alice):
    # Given alice's socket
    communicator = await connected_as(alice)
    # When an event is published to her group
    await publish(owner_group(alice.pk), event("t1"))
    # Then she receives it as JSON
    assert await communicator.receive_json_from(timeout=5) == event("t1")
    await communicator.disconnect()


async def test_another_users_events_are_not_received(alice, bob):
    communicator = await connected_as(alice)
    # When bob's task reports, then alice's
    await publish(owner_group(bob.pk), event("bobs"))
    await publish(owner_group(alice.pk), event("alices"))
    # Then alice's socket carries only her own event
    assert (await communicator.receive_json_from(timeout=5))["id"] == "alices"
    assert await communicator.receive_nothing(timeout=0.5)
    await communicator.disconnect()


async def test_watching_an_own_task_joins_its_group(alice):
    # The first protocol's {"watch": ...} still works
    task_id = await task_of(alice)
    communicator = await connected_as(alice, "/ws/jobs/?follow=subscribed")
    await communicator.send_json_to({"watch": task_id})
    assert await communicator.receive_json_from(timeout=5) == {
        "type": "watching",
        "id": task_id,
    }
    await publish(task_group(task_id), event(task_id, "SUCCESSFUL", 1.0))
    assert await communicator.receive_json_from(timeout=5) == event(
        task_id, "SUCCESSFUL", 1.0
    )
    await communicator.disconnect()


async def test_a_subscribed_socket_follows_only_what_it_subscribes_to(alice):
    # Given a socket that follows subscribed tasks only: its snapshot is empty
    mine, other = await task_of(alice, sequence=2), await task_of(alice)
    communicator = await connect_as(alice, "/ws/jobs/?follow=subscribed")
    assert await communicator.receive_json_from(timeout=5) == {
        "type": "snapshot",
        "tasks": [],
    }
    # When it subscribes to one task, it gets that task's current state
    await communicator.send_json_to({"action": "subscribe", "task": mine})
    reply = await communicator.receive_json_from(timeout=5)
    assert reply["type"] == "subscribed"
    assert reply["task"] == mine
    assert (reply["state"]["id"], reply["state"]["seq"]) == (mine, 2)
    # Then it receives that task's events and not the other's
    for task_id in (other, mine):
        await publish(owner_group(alice.pk), event(task_id, seq=3))
        await publish(task_group(task_id), event(task_id, seq=3))
    assert (await communicator.receive_json_from(timeout=5))["id"] == mine
    assert await communicator.receive_nothing(timeout=0.5)
    # And after unsubscribing, nothing more of it
    await communicator.send_json_to({"action": "unsubscribe", "task": mine})
    assert await communicator.receive_json_from(timeout=5) == {
        "type": "unsubscribed",
        "task": mine,
    }
    await publish(task_group(mine), event(mine, seq=4))
    assert await communicator.receive_nothing(timeout=0.5)
    await communicator.disconnect()


async def test_unsubscribing_mutes_a_task_on_a_socket_that_follows_all(alice):
    task_id = await task_of(alice)
    communicator = await connected_as(alice)
    await communicator.send_json_to({"action": "unsubscribe", "task": task_id})
    assert (await communicator.receive_json_from(timeout=5))["type"] == "unsubscribed"
    await publish(owner_group(alice.pk), event(task_id, seq=9))
    await publish(owner_group(alice.pk), event("another", seq=1))
    assert (await communicator.receive_json_from(timeout=5))["id"] == "another"
    await communicator.disconnect()


@pytest.mark.parametrize("action", ["subscribe", "watch"])
@pytest.mark.parametrize("whose", ["foreign", "unknown"])
async def test_subscribing_to_a_task_not_owned_is_refused(alice, bob, whose, action):
    task_id = await task_of(bob) if whose == "foreign" else "no-such-task"
    communicator = await connected_as(alice)
    # When alice asks to follow it
    frame = {"watch": task_id} if action == "watch" else {"action": action}
    frame.setdefault("task", task_id)
    await communicator.send_json_to(frame)
    # Then she gets an error and joins nothing
    reply = await communicator.receive_json_from(timeout=5)
    assert reply["type"] == "error"
    assert task_id in reply["error"]
    await publish(task_group(task_id), event(task_id))
    await publish(owner_group(alice.pk), event("alices"))
    assert (await communicator.receive_json_from(timeout=5))["id"] == "alices"
    assert await communicator.receive_nothing(timeout=0.5)
    await communicator.disconnect()


@pytest.mark.parametrize(
    "frame",
    [
        {"text_data": "not json"},
        {"text_data": "[1, 2]"},
        {"text_data": '{"watch": 7}'},
        {"text_data": '{"action": "dance", "task": "x"}'},
        {"bytes_data": b"x"},
    ],
)
async def test_malformed_messages_get_an_error_and_the_socket_stays(alice, frame):
    communicator = await connected_as(alice)
    await communicator.send_to(**frame)
    reply = await communicator.receive_json_from(timeout=5)
    assert reply == {
        "type": "error",
        "error": 'Send a JSON object: {"action": "subscribe", "task": "<task id>"}.',
    }
    await publish(owner_group(alice.pk), event("still-open"))
    assert (await communicator.receive_json_from(timeout=5))["id"] == "still-open"
    await communicator.disconnect()


async def test_subscribe_without_a_task_says_what_is_missing(alice):
    communicator = await connected_as(alice)
    await communicator.send_json_to({"action": "subscribe"})
    reply = await communicator.receive_json_from(timeout=5)
    assert reply == {
        "type": "error",
        "error": '"subscribe" needs a "task": the id of your task.',
    }
    await communicator.disconnect()


async def test_a_flooding_client_is_closed_with_4429(alice, settings):
    settings.REALTIME_MAX_FRAMES = 5
    communicator = await connected_as(alice)
    # Five frames in the window are served...
    for _ in range(5):
        await communicator.send_to(text_data="{}")
        assert (await communicator.receive_json_from(timeout=5))["type"] == "error"
    # ...the sixth closes the socket
    await communicator.send_to(text_data="{}")
    assert await closed_with(communicator) == 4429


async def test_an_idle_socket_is_pinged(alice, settings):
    settings.REALTIME_PING_SECONDS = 0.3
    communicator = await connected_as(alice)
    # Then it hears a ping, and again while it stays idle
    assert await communicator.receive_json_from(timeout=5) == {"type": "ping"}
    assert await communicator.receive_json_from(timeout=5) == {"type": "ping"}
    await communicator.disconnect()


async def group_size(group: str) -> int:
    """Members of a group, read from channels-redis' sorted set for it."""
    layer = get_channel_layer()
    connection = layer.connection(layer.consistent_hash(group))
    return await connection.zcard(layer._group_key(group))


async def test_consumer_with_a_user_in_scope_leaves_its_groups(alice):
    # Given the consumer alone, with the user put in the scope directly
    task_id = await task_of(alice)
    communicator = WebsocketCommunicator(JobEventsConsumer.as_asgi(), "/ws/jobs/")
    communicator.scope["user"] = alice
    connected, _ = await communicator.connect()
    assert connected
    assert (await communicator.receive_json_from(timeout=5))["type"] == "snapshot"
    await communicator.send_json_to({"watch": task_id})
    await communicator.receive_json_from(timeout=5)
    groups = (owner_group(alice.pk), task_group(task_id))
    assert [await group_size(group) for group in groups] == [1, 1]
    # When it disconnects
    await communicator.disconnect()
    # Then its channel is in no group any more
    assert [await group_size(group) for group in groups] == [0, 0]


async def frame_of_type(communicator, kind: str, timeout: float = 30) -> dict:
    """The next frame of type ``kind`` (task events in between are skipped)."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        assert left > 0, f"no {kind} frame within {timeout} s"
        frame = await communicator.receive_json_from(timeout=left)
        if frame["type"] == kind:
            return frame


@database_sync_to_async
def upload_and_run(user, *, lose_the_original: bool = False) -> Image:
    """Accept a JPEG for ``user`` and run its thumbnail job here, as a worker."""
    image = services.accept_upload(
        SimpleUploadedFile("photo.jpg", encoded(two_colour((600, 400)), "JPEG")), user
    )
    if lose_the_original:
        image.original.delete(save=False)
    record = lifecycle.claim(image.task_id, "host:1:test")
    execution.run_sync(record)
    return Image.objects.get(pk=image.pk)


async def test_image_events_carry_what_a_client_needs(alice, media_root):
    # Given alice's socket
    communicator = await connected_as(alice)
    # When she uploads an image and its job runs
    image = await upload_and_run(alice)
    # Then the socket says it was added, then ready with every thumbnail
    added = await frame_of_type(communicator, "image.added")
    assert (added["id"], added["task"], added["status"]) == (
        image.pk,
        image.task_id,
        "pending",
    )
    assert added["placeholder"].startswith("data:image/webp;base64,")
    ready = await frame_of_type(communicator, "image.ready")
    assert ready["status"] == "ready"
    assert {(t["spec"], t["format"]) for t in ready["thumbnails"]} == {
        (spec, fmt) for spec in ("small", "medium", "large") for fmt in ("JPEG", "WEBP")
    }
    # And each URL serves its thumbnail to a client with no cookie
    client = Client()
    for thumbnail in ready["thumbnails"]:
        response = await sync_to_async(client.get)(thumbnail["url"])
        assert response.status_code == 200, thumbnail
        served = decoded(b"".join(response.streaming_content))
        assert served.size == (thumbnail["width"], thumbnail["height"])
    await communicator.disconnect()


async def test_a_failed_image_event_says_why(alice, media_root):
    communicator = await connected_as(alice)
    image = await upload_and_run(alice, lose_the_original=True)
    failed = await frame_of_type(communicator, "image.failed")
    assert (failed["id"], failed["status"]) == (image.pk, "failed")
    assert failed["error"] == "Thumbnails could not be made."
    await communicator.disconnect()
