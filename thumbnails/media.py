"""Serving uploaded files to their owners only.

Storage URLs point here (MEDIA_URL): a file is sent only to the owner of the
image it belongs to (and to staff), so guessing or sharing a URL shows nothing
to anyone else. Behind a proxy, swap FileResponse for X-Accel-Redirect.
"""

from django.contrib.auth.decorators import login_required
from django.core.files.storage import default_storage
from django.http import FileResponse, Http404, HttpRequest

from thumbnails.models import Image, Thumbnail

CONTENT_TYPES = {
    "jpg": "image/jpeg",
    "png": "image/png",
    "gif": "image/gif",
    "webp": "image/webp",
}


@login_required
def serve(request: HttpRequest, path: str) -> FileResponse:
    if not _may_see(request.user, path) or not default_storage.exists(path):
        raise Http404("No such file.")
    extension = path.rsplit(".", 1)[-1].lower()
    response = FileResponse(
        default_storage.open(path, "rb"),
        content_type=CONTENT_TYPES.get(extension, "application/octet-stream"),
    )
    response["Cache-Control"] = "private, max-age=86400"
    response["X-Content-Type-Options"] = "nosniff"
    return response


def _may_see(user, path: str) -> bool:
    if user.is_staff:
        return True
    if path.startswith("originals/"):
        return Image.objects.filter(original=path, owner=user).exists()
    if path.startswith("thumbnails/"):
        return Thumbnail.objects.filter(file=path, image__owner=user).exists()
    return False
