"""URLs of stored files that work for whoever was given them.

Every file URL the project hands out (API responses, pages, webhook payloads)
is signed: ``/media/<name>?image=<id>&expires=<unix time>&signature=<...>``,
with Django's signing (the secret key, a salt of its own) over the file's
name, its image and the expiry. The media view (thumbnails.media) serves such
a URL with no cookie and no token, so an ``<img>`` on another site, ``curl``,
a mobile app and a caching proxy can all fetch it; a tampered or expired one
is refused, and so is every URL of an image once it is deleted (the view
checks that the image still has that file).

Expiries are rounded up to whole windows of ``THUMBNAIL_URL_TTL``: a URL
stays the same for a whole window, so browsers and proxies can cache it, and
is valid for at least the TTL and less than twice it.

With ``THUMBNAIL_FILE_URLS = "storage"`` the storage's own ``url()`` is used
instead: an S3-style storage with query-string authentication presigns it
(django-storages: ``AWS_QUERYSTRING_AUTH = True`` and
``AWS_QUERYSTRING_EXPIRE`` set to the TTL).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from urllib.parse import urlencode

from django.conf import settings
from django.core import signing
from django.core.files.storage import default_storage
from django.http import QueryDict

SALT = "thumbnails.file_urls"
SIGNED, STORAGE = "signed", "storage"


class UrlRefused(Exception):
    """A signed file URL that does not hold: str() says why, to the client."""


@dataclass(frozen=True)
class Grant:
    """What a valid signed URL grants: this image's file, until ``expires``."""

    image_id: int
    expires: int

    def seconds_left(self) -> int:
        return max(0, self.expires - int(time.time()))


def url(name: str, image_id: int) -> str:
    """The URL (path and query, or the storage's own) of file ``name`` of image
    ``image_id``, valid for at least THUMBNAIL_URL_TTL seconds."""
    if settings.THUMBNAIL_FILE_URLS == STORAGE:
        return default_storage.url(name)
    ttl = settings.THUMBNAIL_URL_TTL
    expires = (math.floor(time.time() / ttl) + 2) * ttl
    query = {
        "image": image_id,
        "expires": expires,
        "signature": _signature(name, image_id, expires),
    }
    return f"{settings.MEDIA_URL}{name}?{urlencode(query)}"


def of_thumbnail(thumbnail) -> str:
    """``url`` of a Thumbnail's file."""
    return url(thumbnail.file.name, thumbnail.image_id)


def of_original(image) -> str:
    """``url`` of an Image's original file."""
    return url(image.original.name, image.pk)


def is_signed(query: QueryDict) -> bool:
    return "signature" in query


def verify(name: str, query: QueryDict) -> Grant:
    """The grant of a signed URL of file ``name``; UrlRefused if it does not hold."""
    try:
        image_id, expires = int(query["image"]), int(query["expires"])
        signature = query["signature"]
    except (KeyError, ValueError):
        raise UrlRefused("This file link is incomplete.") from None
    value = _value(name, image_id, expires)
    try:
        _signer().unsign(f"{value}{_signer().sep}{signature}")
    except signing.BadSignature:
        raise UrlRefused("This file link is not valid.") from None
    if expires < time.time():
        raise UrlRefused("This file link has expired; ask for a new one.")
    return Grant(image_id, expires)


def _signature(name: str, image_id: int, expires: int) -> str:
    signed = _signer().sign(_value(name, image_id, expires))
    return signed.rsplit(_signer().sep, 1)[1]


def _value(name: str, image_id: int, expires: int) -> str:
    return f"{name}\n{image_id}\n{expires}"


def _signer() -> signing.Signer:
    return signing.Signer(salt=SALT)
