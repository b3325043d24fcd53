"""Image events on the owner's live stream (/ws/jobs/), beside the task
events: a client learns that an image was added, is ready (with every
thumbnail's URL, size and format) or failed (with the reason) with no
follow-up request. File URLs are signed (thumbnails.file_urls), relative to
the site the socket is on. Sent after the write commits, best-effort like
every live event: the rows are the truth."""

from __future__ import annotations

from django.db import transaction
from django.urls import reverse

from tasks import events
from thumbnails import file_urls
from thumbnails.models import Image


def image_added(image: Image) -> None:
    """Announce a new upload (on commit): the gallery of another tab shows it."""
    _send_on_commit(image, "image.added", summary(image))


def image_finished(image: Image) -> None:
    """Announce that an image's job ended: ``image.ready`` with its
    thumbnails, or ``image.failed`` with its reason."""
    if image.status == Image.Status.READY:
        body = {**summary(image), "thumbnails": thumbnail_entries(image)}
        _send_on_commit(image, "image.ready", body)
    elif image.status == Image.Status.FAILED:
        _send_on_commit(image, "image.failed", {**summary(image), "error": image.error})


def thumbnail_entries(image: Image, absolute=lambda url: url) -> list[dict]:
    """Each thumbnail of ``image``: spec, format, size and signed URL (made
    absolute by ``absolute``, e.g. for a webhook's receiver)."""
    return [
        {
            "spec": t.spec,
            "format": t.format,
            "width": t.width,
            "height": t.height,
            "url": absolute(file_urls.of_thumbnail(t)),
        }
        for t in image.thumbnails.order_by("spec", "format")
    ]


def summary(image: Image) -> dict:
    """An image as every event (and the upload page's answer) describes it."""
    return {
        "id": image.pk,
        "task": image.task_id,
        "status": image.status,
        "name": image.original_name,
        "width": image.width,
        "height": image.height,
        "placeholder": image.placeholder,
        "color": image.color,
        "card_url": reverse("thumbnails:card", args=[image.pk]),
        "detail_url": reverse("thumbnails:detail", args=[image.pk]),
    }


def _send_on_commit(image: Image, kind: str, body: dict) -> None:
    event = {"type": kind, **body}
    owner_id, task_id = image.owner_id, image.task_id
    transaction.on_commit(
        lambda: events.send(event, owner_id=owner_id, task_id=task_id), robust=True
    )
