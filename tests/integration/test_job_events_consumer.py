"""Live job events at /ws/jobs/ through the real ASGI stack and a real Redis."""

import pytest
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
from django.contrib.sessions.backends.db import SessionStore

from project.asgi import application
from realtime.consumers import JobEventsConsumer
from tasks.events import owner_group, task_group
from tasks.models import TaskRecord

ORIGIN = (b"origin", b"http://127.0.0.1")

pytestmark = [
    pytest.mark.usefixtures("redis_server"),
    pytest.mark.django_db(transaction=True),
]


def event(task_id: str, status: str = "RUNNING", progress: float = 0.5) -> dict:
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
def task_of(owner) -> str:
    record = TaskRecord.objects.create(
        task_path="thumbnails.tasks.make_thumbnails",
        backend="default",
        queue_name="thumbnailer",
        owner=owner,
    )
    return record.id


async def connect_as(user) -> WebsocketCommunicator:
    """Through the real application: origin check, session auth, routing."""
    headers = [ORIGIN, await session_cookie(user)]
    communicator = WebsocketCommunicator(application, "/ws/jobs/", headers=headers)
    connected, _ = await communicator.connect()
    assert connected
    return communicator


async def publish(group: str, message: dict) -> None:
    await get_channel_layer().group_send(group, message)


async def test_anonymous_is_refused():
    communicator = WebsocketCommunicator(application, "/ws/jobs/", headers=[ORIGIN])
    connected, code = await communicator.connect()
    assert connected is False
    assert code == 1000  # closed in connect: the handshake is refused with 403


async def test_a_stale_session_is_refused(alice):
    # Given a session cookie made before the password changed
    cookie = await session_cookie(alice)
    alice.set_unusable_password()
    await sync_to_async(alice.save)()
    # Then the socket is refused
    headers = [ORIGIN, cookie]
    communicator = WebsocketCommunicator(application, "/ws/jobs/", headers=headers)
    connected, _ = await communicator.connect()
    assert connected is False


async def test_owner_receives_events_of_own_tasks(alice):
    # Given alice's socket
    communicator = await connect_as(alice)
    # When an event is published to her group
    await publish(owner_group(alice.pk), event("t1"))
    # Then she receives it as JSON
    assert await communicator.receive_json_from(timeout=5) == event("t1")
    await communicator.disconnect()


async def test_another_users_events_are_not_received(alice, bob):
    communicator = await connect_as(alice)
    # When bob's task reports, then alice's
    await publish(owner_group(bob.pk), event("bobs"))
    await publish(owner_group(alice.pk), event("alices"))
    # Then alice's socket carries only her own event
    assert (await communicator.receive_json_from(timeout=5))["id"] == "alices"
    assert await communicator.receive_nothing(timeout=0.5)
    await communicator.disconnect()


async def test_watching_an_own_task_joins_its_group(alice):
    task_id = await task_of(alice)
    communicator = await connect_as(alice)
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


@pytest.mark.parametrize("whose", ["foreign", "unknown"])
async def test_watching_a_task_not_owned_is_refused(alice, bob, whose):
    task_id = await task_of(bob) if whose == "foreign" else "no-such-task"
    communicator = await connect_as(alice)
    # When alice asks to watch it
    await communicator.send_json_to({"watch": task_id})
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
    [{"text_data": "not json"}, {"text_data": '{"watch": 7}'}, {"bytes_data": b"x"}],
)
async def test_malformed_messages_get_an_error_and_the_socket_stays(alice, frame):
    communicator = await connect_as(alice)
    await communicator.send_to(**frame)
    reply = await communicator.receive_json_from(timeout=5)
    assert reply == {
        "type": "error",
        "error": 'Send {"watch": "<task id>"} as JSON text.',
    }
    await publish(owner_group(alice.pk), event("still-open"))
    assert (await communicator.receive_json_from(timeout=5))["id"] == "still-open"
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
    await communicator.send_json_to({"watch": task_id})
    await communicator.receive_json_from(timeout=5)
    groups = (owner_group(alice.pk), task_group(task_id))
    assert [await group_size(group) for group in groups] == [1, 1]
    # When it disconnects
    await communicator.disconnect()
    # Then its channel is in no group any more
    assert [await group_size(group) for group in groups] == [0, 0]
