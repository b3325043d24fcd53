"""Websocket URL routes, mounted by project.asgi."""

from django.urls import path, re_path

from realtime.consumers import EchoConsumer, JobEventsConsumer, NotFoundConsumer

websocket_urlpatterns = [
    path("chat/", EchoConsumer.as_asgi()),
    path("ws/jobs/", JobEventsConsumer.as_asgi()),
    # Last: every other path is refused cleanly instead of raising in the router.
    re_path(r"", NotFoundConsumer.as_asgi()),
]
