"""ASGI entry point: HTTP goes to Django, websockets to realtime's consumers,
and channel-layer messages on named channels to the job system's workers."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
# Set up Django before importing anything that touches models.
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ChannelNameRouter, ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.conf import settings  # noqa: E402

from realtime.middleware import DatabaseOutageGuard  # noqa: E402
from realtime.routing import websocket_urlpatterns  # noqa: E402
from tasks.routing import channel_routes  # noqa: E402


def _http_app():
    if settings.DEBUG:
        # Plain `daphne` serves no static files; in development Django does.
        from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler

        return ASGIStaticFilesHandler(django_asgi_app)
    return django_asgi_app


application = ProtocolTypeRouter(
    {
        "http": _http_app(),
        "websocket": AllowedHostsOriginValidator(
            DatabaseOutageGuard(AuthMiddlewareStack(URLRouter(websocket_urlpatterns)))
        ),
        "channel": ChannelNameRouter(channel_routes()),
    }
)
