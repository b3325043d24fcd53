"""Websockets while the database is down: closed with 4503, never a crash.

Signing a socket in reads its session and user from the database. When that
read fails for an outage (tasks.outage), the handshake is accepted and the
socket closed at once with CLOSE_UNAVAILABLE, so a page can tell "try again
in a moment" from a refused origin (403), being signed out (4401) or a
network error (1006), and reconnect with its usual backoff.
"""

from __future__ import annotations

from tasks import outage

CLOSE_UNAVAILABLE = 4503  # the database is not answering: reconnect later


class DatabaseOutageGuard:
    """ASGI middleware around the websocket stack (outside AuthMiddleware)."""

    def __init__(self, inner) -> None:
        self.inner = inner

    async def __call__(self, scope, receive, send):
        state = {"connected": False, "accepted": False}

        async def receiving():
            message = await receive()
            state["connected"] |= message["type"] == "websocket.connect"
            return message

        async def sending(message):
            state["accepted"] |= message["type"] == "websocket.accept"
            await send(message)

        try:
            return await self.inner(scope, receiving, sending)
        except Exception as error:
            if state["accepted"] or not outage.absorb_database_outage(error):
                raise
        await close_unavailable(receive if not state["connected"] else None, send)


async def close_unavailable(receive, send) -> None:
    """Accept the handshake (after reading it, with ``receive``), then close
    with CLOSE_UNAVAILABLE."""
    if receive is not None:
        await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    await send({"type": "websocket.close", "code": CLOSE_UNAVAILABLE})
