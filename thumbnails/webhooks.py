"""Signed webhook calls: ``X-Thumbnails-Signature: sha256=<hex HMAC of the body>``."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import urllib.error
import urllib.request

from django.conf import settings

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Thumbnails-Signature"


class WebhookRefused(Exception):
    """The receiver answered with a status other than 2xx."""


def payload(image_id: int, status: str) -> bytes:
    from thumbnails.models import Image

    image = Image.objects.filter(pk=image_id).first()
    body = {"event": f"image.{status}", "image": image_id, "status": status}
    if image is not None:
        body["error"] = image.error
        body["thumbnails"] = [
            {"spec": t.spec, "format": t.format, "width": t.width, "height": t.height}
            for t in image.thumbnails.all()
        ]
    return json.dumps(body, sort_keys=True).encode()


def sign(body: bytes, secret: str | None = None) -> str:
    key = (secret or settings.THUMBNAIL_WEBHOOK_SECRET).encode()
    return "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()


def deliver(url: str, body: bytes) -> int:
    """POST ``body``; returns the status, raises on a non-2xx answer or timeout."""
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"Webhook URL must be http(s): {url!r}")
    request = urllib.request.Request(  # noqa: S310 (scheme checked above)
        url,
        data=body,
        method="POST",
        headers={"Content-Type": "application/json", SIGNATURE_HEADER: sign(body)},
    )
    try:
        with urllib.request.urlopen(  # noqa: S310
            request, timeout=settings.THUMBNAIL_WEBHOOK_TIMEOUT
        ) as response:
            return response.status
    except urllib.error.HTTPError as error:
        raise WebhookRefused(f"{url} answered {error.code}") from error
