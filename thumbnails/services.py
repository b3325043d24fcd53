"""What views, the API, the admin and commands do to images.

Accepting an upload validates through the pipeline's allowlist, stores the
original under a generated name, creates the Image and enqueues its
thumbnails. It is the one way in for the upload page, the API and the admin,
so every way validates alike (never through Django's stock ImageField check,
which opens files with every Pillow format, EPS included)."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable

from django.core.files.uploadedfile import UploadedFile
from django.db import transaction
from django.tasks import TaskResultStatus
from django.tasks.exceptions import TaskResultDoesNotExist

import tasks
from tasks.context import enqueued_by
from tasks.models import error_reason
from thumbnails import conf, events, pipeline
from thumbnails.models import Image

logger = logging.getLogger(__name__)


def accept_upload(upload: UploadedFile, owner, *, webhook_url: str = "") -> Image:
    """Store ``upload`` for ``owner`` and queue its thumbnails.

    Raises pipeline.ImageRejected (nothing stored) when the file is refused.
    """
    upload.seek(0)
    # Checks the byte limit first (from the upload's size, nothing read).
    info = pipeline.inspect(upload, **conf.limits())
    digest = _sha256(upload)
    image = Image(
        owner=owner,
        original_name=(upload.name or "")[:255],
        sha256=digest,
        format=info.format,
        width=info.width,
        height=info.height,
        byte_size=upload.size,
        placeholder=info.placeholder,
        color=info.color,
        webhook_url=webhook_url,
    )
    upload.seek(0)
    image.original.save("original", upload, save=False)  # name from original_path
    try:
        with transaction.atomic():
            image.save()
            enqueue_thumbnails(image)
            events.image_added(image)
    except BaseException:
        image.original.delete(save=False)  # no orphan file when the row fails
        raise
    logger.info(
        "Image %s accepted (%s %dx%d)", image.pk, info.format, info.width, info.height
    )
    return image


def enqueue_thumbnails(image: Image, specs: list[str] | None = None) -> str:
    """Queue make_thumbnails for ``image`` (on commit), or join its equal job
    that is waiting or running (make_thumbnails is unique per image and
    specs); returns the task id."""
    from thumbnails.tasks import make_thumbnails

    with enqueued_by(image.owner):
        result = make_thumbnails.enqueue(image.pk, specs)
    Image.objects.filter(pk=image.pk).update(**_follow(image, result))
    return result.id


def enqueue_thumbnails_of(
    images: Iterable[Image], specs: list[str] | None = None
) -> int:
    """``enqueue_thumbnails`` for many images: one enqueue_many per owner
    (each job is its owner's), one UPDATE per batch of images. An image
    whose equal job is waiting or running keeps that job. Returns how many."""
    from thumbnails.tasks import make_thumbnails

    by_owner: dict[int, list[Image]] = {}
    for image in images:
        by_owner.setdefault(image.owner_id, []).append(image)
    # One transaction: the wake-ups go out once the images say "pending", so a
    # quick worker's "processing" or "ready" is never overwritten.
    with transaction.atomic():
        for owned in by_owner.values():
            with enqueued_by(owned[0].owner):
                results = tasks.enqueue_many(
                    make_thumbnails, [((image.pk, specs), {}) for image in owned]
                )
            by_fields: dict[tuple, list[Image]] = {}
            for image, result in zip(owned, results, strict=True):
                by_fields.setdefault(tuple(_follow(image, result)), []).append(image)
            for fields, same in by_fields.items():
                Image.objects.bulk_update(same, fields, batch_size=500)
    return sum(len(owned) for owned in by_owner.values())


def delete_image(image: Image) -> None:
    """Delete the rows now; a guaranteed job removes the files, retried until
    storage succeeds. Thumbnail files shared with another image (same bytes)
    are kept while that image exists."""
    from thumbnails.tasks import delete_files

    with transaction.atomic():
        paths = [image.original.name]
        shared = Image.objects.filter(sha256=image.sha256).exclude(pk=image.pk).exists()
        if not shared:
            paths += list(image.thumbnails.values_list("file", flat=True))
        image.delete()
        transaction.on_commit(lambda: delete_files.enqueue(paths))
    logger.info("Image %s deleted; %d file(s) queued for removal", image.pk, len(paths))


def sync_status(image: Image) -> Image:
    """Let the image's status follow its task when the task ended without the
    task body saying so (e.g. FAILED by the reconciler after lost workers)."""
    from thumbnails.tasks import make_thumbnails

    if image.is_final or not image.task_id:
        return image
    try:
        result = make_thumbnails.get_result(image.task_id)
    except TaskResultDoesNotExist:
        return image
    if result.status == TaskResultStatus.FAILED:
        reason = error_reason(result.errors[-1]) if result.errors else ""
        image.status, image.error = Image.Status.FAILED, reason or "The job failed."
        Image.objects.filter(pk=image.pk).update(status=image.status, error=image.error)
        events.image_finished(image)
    return image


def forget_pruned_tasks(sender: type, ids: list[str], **kwargs) -> None:
    """Task records past their retention are being deleted (in this
    transaction): their images keep their own status and error, first
    brought up to date from the record (a job FAILED by the reconciler
    without the task body saying so), and no longer point to the job."""
    pointing = Image.objects.exclude(task_id="").filter(task_id__in=ids)
    for image in pointing.exclude(status__in=FINAL):
        sync_status(image)
    pointing.update(task_id="")


FINAL = (Image.Status.READY, Image.Status.FAILED)


def _follow(image: Image, result) -> dict:
    """Point ``image`` at its thumbnails job: pending while it waits; an equal
    job already running (unique) leaves the image processing as it is.
    Returns the fields changed, to be written."""
    changes = {"task_id": result.id}
    if result.status == TaskResultStatus.READY:
        changes |= {"status": Image.Status.PENDING, "error": ""}
    for name, value in changes.items():
        setattr(image, name, value)
    return changes


def _sha256(upload: UploadedFile) -> str:
    upload.seek(0)
    digest = hashlib.sha256()
    for chunk in upload.chunks():
        digest.update(chunk)
    return digest.hexdigest()
