"""The seed's echo at /chat/, through the real ASGI app and a real Redis layer."""

import pytest
from channels.testing import WebsocketCommunicator

from project.asgi import application

ORIGIN = [(b"origin", b"http://127.0.0.1")]

# Channels closes stale database connections around every message (in the
# thread async tests share); earlier async tests may have left one there.
pytestmark = [pytest.mark.usefixtures("redis_server"), pytest.mark.django_db]


async def connect(path: str, headers=ORIGIN) -> tuple[WebsocketCommunicator, bool]:
    communicator = WebsocketCommunicator(application, path, headers=headers)
    connected, _ = await communicator.connect()
    return communicator, connected


async def test_text_frame_is_echoed():
    # Given a client on /chat/
    communicator, connected = await connect("/chat/")
    assert connected
    # When it sends a text frame
    await communicator.send_to(text_data="hello world")
    # Then the reply is the seed's echo
    assert await communicator.receive_from() == "You said: hello world"
    await communicator.disconnect()


async def test_empty_text_gets_an_error_and_the_socket_stays_open():
    communicator, _ = await connect("/chat/")
    # (send_to refuses empty text, so the frame goes in raw)
    await communicator.send_input({"type": "websocket.receive", "text": ""})
    assert await communicator.receive_from() == "Error: empty message; send some text."
    await communicator.send_to(text_data="still here")
    assert await communicator.receive_from() == "You said: still here"
    await communicator.disconnect()


async def test_binary_frame_gets_a_reason_then_close_1003():
    communicator, _ = await connect("/chat/")
    await communicator.send_to(bytes_data=b"\x00\x01")
    assert "binary frames are not supported" in await communicator.receive_from()
    assert await communicator.receive_output() == {
        "type": "websocket.close",
        "code": 1003,
    }


async def test_over_long_text_gets_a_reason_then_close_1009(settings):
    communicator, _ = await connect("/chat/")
    await communicator.send_to(text_data="x" * (settings.ECHO_MAX_CHARS + 1))
    reply = await communicator.receive_from()
    assert reply.startswith("Error: message too long")
    assert await communicator.receive_output() == {
        "type": "websocket.close",
        "code": 1009,
    }


@pytest.mark.parametrize("path", ["/", "/private", "/user/1234", "/chat/extra"])
async def test_other_paths_are_refused(path):
    communicator, connected = await connect(path)
    assert not connected
    await communicator.wait()


async def test_foreign_origin_is_refused():
    communicator, connected = await connect(
        "/chat/", headers=[(b"origin", b"http://evil.example")]
    )
    assert not connected
    await communicator.wait()
