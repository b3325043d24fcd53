"""The site's answer while its database is down: 503 with Retry-After.

A database outage (a restart, a failover, a cut connection) surfaces in a
view as an OperationalError or InterfaceError; unhandled, Django answers 500
with a traceback in the log (or its debug page). Here a request that met one
gets 503 Service Unavailable with ``Retry-After``: JSON ``{"detail": ...}``
for the API and JSON clients, a short page for people. The outage is logged
once per process (tasks.outage), not once per request.
"""

from __future__ import annotations

from collections.abc import Callable

from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.template.loader import render_to_string

from tasks import outage

RETRY_AFTER_SECONDS = 5
MESSAGE = (
    "The service is briefly unavailable: its database is not answering. "
    "Please try again in a few seconds."
)


class DatabaseUnavailableMiddleware:
    """Turns a view's database-outage error into a 503 (put it first)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if outage.database.down and response.status_code != 503 and _used_database():
            outage.database.answered()  # the end of the outage is logged once
        return response

    def process_exception(
        self, request: HttpRequest, exception: Exception
    ) -> HttpResponse | None:
        if not outage.absorb_database_outage(exception):
            return None
        return unavailable(request)


def unavailable(request: HttpRequest) -> HttpResponse:
    """The 503 for ``request``: JSON for the API and JSON clients, else a page."""
    if request.path.startswith("/api/") or _prefers_json(request):
        response = JsonResponse({"detail": MESSAGE}, status=503)
    else:
        # Rendered without the request: its context processors would ask the
        # database for the user.
        page = render_to_string("503.html", {"message": MESSAGE})
        response = HttpResponse(page, status=503)
    response["Retry-After"] = str(RETRY_AFTER_SECONDS)
    # Django's request logger would log every such answer as an error; the
    # outage itself is logged once (tasks.outage).
    response._has_been_logged = True
    return response


def _prefers_json(request: HttpRequest) -> bool:
    accept = request.headers.get("Accept", "")
    return "application/json" in accept and "text/html" not in accept


def _used_database() -> bool:
    """Whether this request's connection is open and met no error (it is
    opened on first use and closed when the request ends)."""
    return connection.connection is not None and not connection.errors_occurred
