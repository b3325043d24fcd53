"""The thumbnail jobs: making thumbnails on the ``thumbnailer`` channel, and
the guaranteed (Celery) jobs that clean up storage and call webhooks."""

from __future__ import annotations

import logging
import urllib.error
from urllib.parse import urlsplit

from django.db import transaction
from django.tasks import task

from tasks.progress import report_progress
from thumbnails import conf, events, files, pipeline, webhooks
from thumbnails.models import Image, Thumbnail

logger = logging.getLogger(__name__)


def one_job_per_image_and_specs(args: list, kwargs: dict) -> str:
    """make_thumbnails' unique key: the image and its set of specs (None and
    every spec named are one set), so double clicks make one job."""
    image_id = args[0] if args else kwargs["image_id"]
    specs = args[1] if len(args) > 1 else kwargs.get("specs")
    return f"{image_id}:{','.join(sorted(specs or conf.spec_names()))}"


def per_receiver(args: list, kwargs: dict) -> str:
    """call_webhook's concurrency key: the receiver's host name."""
    url = args[1] if len(args) > 1 else kwargs["url"]
    return urlsplit(url).hostname or ""


@task(queue_name="thumbnailer", unique_key=one_job_per_image_and_specs)
def make_thumbnails(image_id: int, specs: list[str] | None = None) -> dict:
    """Make every configured thumbnail of an image (or only ``specs``).

    Idempotent: a second run rewrites the same files and rows, so a duplicate
    delivery or a retry after a crash leaves one set of thumbnails.
    """
    image = Image.objects.filter(pk=image_id).select_related("owner").first()
    if image is None:
        return {"image": image_id, "skipped": "the image was deleted"}
    _set_status(image, Image.Status.PROCESSING)
    outputs = conf.specs(specs)
    try:
        with image.original.open("rb") as original:
            made = _make(image, original, outputs)
    except pipeline.ImageRejected as error:
        _set_status(image, Image.Status.FAILED, str(error))
        raise
    except Exception:
        _set_status(image, Image.Status.FAILED, "Thumbnails could not be made.")
        raise
    _set_status(image, Image.Status.READY)
    return {"image": image_id, "thumbnails": made}


@task(
    backend="guaranteed",
    max_attempts=10,
    retry_on=(Exception,),
    backoff_base=1.0,
    backoff_cap=120.0,
)
def delete_files(paths: list[str]) -> int:
    """Remove files from storage, retried with backoff until storage succeeds."""
    return files.delete_all(paths)


@task(
    backend="guaranteed",
    max_attempts=8,
    retry_on=(OSError, urllib.error.URLError, webhooks.WebhookRefused),
    backoff_base=2.0,
    backoff_cap=600.0,
    concurrency=4,  # calls at once to one receiver
    concurrency_key=per_receiver,
)
def call_webhook(image_id: int, url: str, status: str) -> int:
    """POST the image's final state to its webhook, signed; retried on errors."""
    return webhooks.deliver(url, webhooks.payload(image_id, status))


def _make(image: Image, original, outputs) -> int:
    made = 0
    for rendition in pipeline.render(original, outputs, **conf.limits()):
        path = files.thumbnail_path(image.sha256, rendition.spec.name, rendition.format)
        files.write_whole(path, rendition.data)
        Thumbnail.objects.update_or_create(
            image=image,
            spec=rendition.spec.name,
            format=rendition.format,
            defaults={
                "width": rendition.width,
                "height": rendition.height,
                "file": path,
                "byte_size": len(rendition.data),
            },
        )
        made += 1
        size = f"{rendition.width}x{rendition.height}"
        report_progress(
            made / len(outputs), f"{rendition.spec.name} {rendition.format} {size}"
        )
    return made


def _set_status(image: Image, status: str, error: str = "") -> None:
    image.status, image.error = status, error
    Image.objects.filter(pk=image.pk).update(status=status, error=error)
    events.image_finished(image)  # (nothing for a status that is not final)
    if status in (Image.Status.READY, Image.Status.FAILED) and image.webhook_url:
        transaction.on_commit(
            lambda: call_webhook.enqueue(image.pk, image.webhook_url, status)
        )
