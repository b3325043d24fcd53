"""Serving stored files (MEDIA_URL): to whoever holds a signed URL, else to
the signed-in owner and staff only.

A signed URL (thumbnails.file_urls) needs no cookie and no token; it works
until it expires and while its image exists, and its response may be cached
by anyone for as long as the URL is valid. An unsigned path is served to the
owner of the image it belongs to (and to staff), privately. A file's content
never changes under its name (thumbnails are named by content, originals by a
new random name), so its ETag is its name's hash, a strong one. Behind
nginx (MEDIA_ACCEL_PREFIX), the answer is an X-Accel-Redirect and nginx sends
the file itself.
"""

from __future__ import annotations

import hashlib
from urllib.parse import quote

from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.core.files.storage import default_storage
from django.http import (
    FileResponse,
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseForbidden,
    HttpResponseNotModified,
)
from django.utils.http import parse_etags

from thumbnails import file_urls
from thumbnails.models import Image, Thumbnail

CONTENT_TYPES = {
    "jpg": "image/jpeg",
    "png": "image/png",
    "gif": "image/gif",
    "webp": "image/webp",
    "heic": "image/heic",
    "avif": "image/avif",
}
# Unsigned (owner) responses: the browser may keep them this long.
PRIVATE_MAX_AGE = 3600


def serve(request: HttpRequest, path: str) -> HttpResponse:
    if file_urls.is_signed(request.GET):
        try:
            grant = file_urls.verify(path, request.GET)
        except file_urls.UrlRefused as refused:
            return HttpResponseForbidden(str(refused), content_type="text/plain")
        if not _belongs(path, grant.image_id):
            raise Http404("No such file.")
        cache = f"public, max-age={grant.seconds_left()}, immutable"
        return _file(request, path, cache)
    if not request.user.is_authenticated:
        return redirect_to_login(request.get_full_path())
    if not _may_see(request.user, path):
        raise Http404("No such file.")
    return _file(request, path, f"private, max-age={PRIVATE_MAX_AGE}")


def _file(request: HttpRequest, path: str, cache_control: str) -> HttpResponse:
    etag = f'"{hashlib.sha256(path.encode()).hexdigest()[:32]}"'
    if etag in parse_etags(request.headers.get("If-None-Match", "")):
        response: HttpResponse = HttpResponseNotModified()
    elif not default_storage.exists(path):
        raise Http404("No such file.")
    else:
        extension = path.rsplit(".", 1)[-1].lower()
        content_type = CONTENT_TYPES.get(extension, "application/octet-stream")
        if settings.MEDIA_ACCEL_PREFIX:  # nginx sends the file
            response = HttpResponse(content_type=content_type)
            response["X-Accel-Redirect"] = settings.MEDIA_ACCEL_PREFIX + quote(path)
        else:
            response = FileResponse(
                default_storage.open(path, "rb"), content_type=content_type
            )
    response["ETag"] = etag
    response["Cache-Control"] = cache_control
    response["X-Content-Type-Options"] = "nosniff"
    return response


def _belongs(path: str, image_id: int) -> bool:
    """Whether ``path`` is a file of image ``image_id`` (which still exists)."""
    if path.startswith("originals/"):
        return Image.objects.filter(pk=image_id, original=path).exists()
    if path.startswith("thumbnails/"):
        return Thumbnail.objects.filter(image_id=image_id, file=path).exists()
    return False


def _may_see(user, path: str) -> bool:
    if user.is_staff:
        return True
    if path.startswith("originals/"):
        return Image.objects.filter(original=path, owner=user).exists()
    if path.startswith("thumbnails/"):
        return Thumbnail.objects.filter(file=path, image__owner=user).exists()
    return False
