"""Signed webhook calls: ``X-Thumbnails-Signature: sha256=<hex HMAC of the body>``."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import socket
import urllib.error
import urllib.parse
import urllib.request

from django.conf import settings

from thumbnails import events

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Thumbnails-Signature"


class WebhookRefused(Exception):
    """The receiver answered with a status other than 2xx."""


class ForbiddenWebhookAddress(ValueError):
    """The webhook's host resolves to a loopback, private or reserved address."""


def check_address(url: str) -> None:
    """Refuse URLs whose host is not a public address (unless allowed), so a
    webhook cannot be aimed at the server's own network."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ForbiddenWebhookAddress(
            f"Webhook URL must be http(s) with a host: {url!r}"
        )
    if settings.THUMBNAIL_WEBHOOK_ALLOW_PRIVATE:
        return
    try:
        infos = socket.getaddrinfo(parts.hostname, parts.port or 443)
    except socket.gaierror as error:
        raise ForbiddenWebhookAddress(f"Cannot resolve {parts.hostname}.") from error
    for *_, address in infos:
        if not ipaddress.ip_address(address[0]).is_global:
            raise ForbiddenWebhookAddress(
                f"Webhook host {parts.hostname} is not a public address."
            )


def payload(image_id: int, status: str) -> bytes:
    from thumbnails.models import Image

    image = Image.objects.filter(pk=image_id).first()
    body = {"event": f"image.{status}", "image": image_id, "status": status}
    if image is not None:
        body["error"] = image.error
        body["thumbnails"] = events.thumbnail_entries(image, absolute=_public)
    return json.dumps(body, sort_keys=True).encode()


def _public(url: str) -> str:
    """A URL as the receiver must call it: absolute, on the public address."""
    return urllib.parse.urljoin(settings.PUBLIC_URL, url)


def sign(body: bytes, secret: str | None = None) -> str:
    key = (secret or settings.THUMBNAIL_WEBHOOK_SECRET).encode()
    return "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()


def deliver(url: str, body: bytes) -> int:
    """POST ``body``; returns the status, raises on a non-2xx answer or timeout.
    Redirects are not followed (a 3xx is an error), so the address check holds."""
    check_address(url)
    request = urllib.request.Request(  # noqa: S310 (scheme checked above)
        url,
        data=body,
        method="POST",
        headers={"Content-Type": "application/json", SIGNATURE_HEADER: sign(body)},
    )
    try:
        with _OPENER.open(
            request, timeout=settings.THUMBNAIL_WEBHOOK_TIMEOUT
        ) as response:
            return response.status
    except urllib.error.HTTPError as error:
        raise WebhookRefused(f"{url} answered {error.code}") from error


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


_OPENER = urllib.request.build_opener(_NoRedirects)
