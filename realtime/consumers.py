"""Websocket consumers."""

from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

# Close codes from RFC 6455.
CLOSE_UNSUPPORTED_DATA = 1003
CLOSE_MESSAGE_TOO_BIG = 1009


class EchoConsumer(AsyncWebsocketConsumer):
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


class NotFoundConsumer(AsyncWebsocketConsumer):
    """Refuses the handshake for any path without a consumer (HTTP 403)."""

    async def connect(self):
        await self.close()
