"""Uploaded images and the thumbnails made from them."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q

EXTENSIONS = {
    "JPEG": "jpg",
    "PNG": "png",
    "GIF": "gif",
    "WEBP": "webp",
    "HEIF": "heic",
    "AVIF": "avif",
}


def original_path(instance: Image, filename: str) -> str:
    """A generated name (never the client's), grouped by content hash prefix."""
    extension = EXTENSIONS.get(instance.format, "bin")
    return f"originals/{instance.sha256[:2]}/{uuid.uuid4().hex}.{extension}"


class ImageQuerySet(models.QuerySet):
    def owned_by(self, user) -> ImageQuerySet:
        return self.filter(owner=user)


class Image(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        PROCESSING = "processing", "Processing"
        READY = "ready", "Ready"
        FAILED = "failed", "Failed"

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="images"
    )
    original = models.FileField(upload_to=original_path, max_length=255)
    original_name = models.CharField(max_length=255, blank=True)
    sha256 = models.CharField(max_length=64, db_index=True)
    format = models.CharField(max_length=10)
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    byte_size = models.PositiveBigIntegerField()
    # Made at upload, shown until the thumbnails exist: a ~24 px WebP as a
    # data: URI, and the dominant colour as #rrggbb.
    placeholder = models.TextField(blank=True)
    color = models.CharField(max_length=7, blank=True)
    status = models.CharField(
        max_length=10, choices=Status.choices, default=Status.PENDING
    )
    error = models.TextField(blank=True)
    # The id of the latest make_thumbnails job (a django.tasks result id).
    task_id = models.CharField(max_length=32, blank=True)
    webhook_url = models.URLField(blank=True, max_length=500)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = ImageQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-pk"]
        indexes = [
            models.Index(fields=["owner", "-created_at"], name="image_owner_recent"),
            # Pruned task records clear their images' pointers (tasks.retention).
            models.Index(
                fields=["task_id"], condition=~Q(task_id=""), name="image_task"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.original_name or 'image'} ({self.pk})"

    @property
    def is_final(self) -> bool:
        return self.status in (self.Status.READY, self.Status.FAILED)


class Thumbnail(models.Model):
    image = models.ForeignKey(
        Image, on_delete=models.CASCADE, related_name="thumbnails"
    )
    spec = models.CharField(max_length=32)
    format = models.CharField(max_length=10)
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    file = models.FileField(max_length=255)
    byte_size = models.PositiveIntegerField()

    class Meta:
        ordering = ["image", "width", "format"]
        constraints = [
            models.UniqueConstraint(
                fields=["image", "spec", "format"], name="one_thumbnail_per_spec_format"
            )
        ]

    def __str__(self) -> str:
        return f"{self.spec} {self.format} {self.width}x{self.height}"
