"""Writing and removing files through Django's storage API (any storage)."""

from __future__ import annotations

import logging
import os
import uuid

from django.core.files.base import ContentFile
from django.core.files.storage import Storage, default_storage

logger = logging.getLogger(__name__)


def thumbnail_path(sha256: str, spec: str, fmt: str) -> str:
    """Derived from the content and the spec: the same bytes reuse the same files."""
    extension = {"JPEG": "jpg", "WEBP": "webp", "AVIF": "avif"}[fmt]
    return f"thumbnails/{sha256[:2]}/{sha256}/{spec}.{extension}"


def write_whole(path: str, data: bytes, storage: Storage | None = None) -> str:
    """Write ``data`` at ``path`` so that it only ever appears complete.

    On a filesystem, write a temporary file beside it, then rename it into
    place (atomic). Object stores (S3) publish an upload only when whole.
    An existing file at ``path`` is replaced (its content is the same).
    """
    storage = storage or default_storage
    try:
        final = storage.path(path)
    except NotImplementedError:
        if storage.exists(path):
            storage.delete(path)
        return storage.save(path, ContentFile(data))
    temporary = storage.save(f"{path}.{uuid.uuid4().hex}.part", ContentFile(data))
    os.replace(storage.path(temporary), final)
    return path


def delete_all(paths: list[str], storage: Storage | None = None) -> int:
    """Delete each path that exists; an error propagates (the caller retries).
    Returns how many were deleted."""
    storage = storage or default_storage
    deleted = 0
    for path in paths:
        if path and storage.exists(path):
            storage.delete(path)
            deleted += 1
    return deleted
