"""Pages for people: upload images, list them, look at one.

Every page shows only the signed-in user's own images (another's is a 404)
and follows their jobs live over /ws/jobs/ (thumbnails/static/thumbnails/).
"""

from __future__ import annotations

from dataclasses import dataclass

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.files.uploadedfile import UploadedFile
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods

from thumbnails import events, file_urls, pipeline, services
from thumbnails.forms import UploadForm
from thumbnails.models import Image

IMAGES_PER_PAGE = 24
CARD_WIDTH = 160  # CSS pixels of a card's thumbnail
DETAIL_WIDTH = 960  # about the page's content width (58rem)


@dataclass(frozen=True)
class Picture:
    """An image's thumbnails as <picture> attributes: a srcset per format the
    browser may choose (AVIF, then WebP), and JPEG for the <img> itself."""

    sources: list[tuple[str, str]]  # (content type, srcset), preferred first
    jpeg_srcset: str
    src: str
    width: int
    height: int


# <source> formats in the order browsers should prefer them.
SOURCE_FORMATS = (("AVIF", "image/avif"), ("WEBP", "image/webp"))


@dataclass(frozen=True)
class Outcome:
    """What became of one uploaded file."""

    name: str
    image: Image | None = None
    error: str = ""
    code: str = ""


@login_required
@require_GET
def image_list(request: HttpRequest) -> HttpResponse:
    images = Image.objects.owned_by(request.user).prefetch_related("thumbnails")
    page = Paginator(images, IMAGES_PER_PAGE).get_page(request.GET.get("page"))
    cards = [_card(image, CARD_WIDTH) for image in page]
    return render(request, "thumbnails/list.html", {"page": page, "cards": cards})


@login_required
@require_GET
def image_detail(request: HttpRequest, pk: int) -> HttpResponse:
    image, picture = _card(_own_image(request, pk), DETAIL_WIDTH)
    return render(
        request, "thumbnails/detail.html", {"image": image, "picture": picture}
    )


@login_required
@require_GET
def image_card(request: HttpRequest, pk: int) -> HttpResponse:
    """One image's card alone: the pages swap it in when its job ends."""
    image, picture = _card(_own_image(request, pk), CARD_WIDTH)
    return render(
        request, "thumbnails/_card.html", {"image": image, "picture": picture}
    )


@login_required
@require_http_methods(["GET", "POST"])
def upload(request: HttpRequest) -> HttpResponse:
    """The form; a POST stores each file or says why not. With ``Accept:
    application/json`` (the page's script) one file per request, JSON back."""
    if request.method == "GET":
        return render(request, "thumbnails/upload.html", {"form": UploadForm()})
    form = UploadForm(request.POST, request.FILES)
    if _wants_json(request):
        return _upload_json(request, form)
    if not form.is_valid():
        return render(request, "thumbnails/upload.html", {"form": form}, status=400)
    outcomes = [_accept(upload, request.user) for upload in form.cleaned_data["images"]]
    if all(outcome.image for outcome in outcomes):
        messages.success(request, _accepted_message(len(outcomes)))
        return redirect("thumbnails:list")
    context = {"form": UploadForm(), "outcomes": outcomes}
    return render(request, "thumbnails/upload.html", context, status=400)


def _upload_json(request: HttpRequest, form: UploadForm) -> JsonResponse:
    if not form.is_valid():
        return JsonResponse({"error": form.errors["images"][0]}, status=400)
    uploads = form.cleaned_data["images"]
    if len(uploads) != 1:
        return JsonResponse({"error": "Send one file per request."}, status=400)
    outcome = _accept(uploads[0], request.user)
    if outcome.image is None:
        body = {"name": outcome.name, "error": outcome.error, "code": outcome.code}
        return JsonResponse(body, status=400)
    image = outcome.image
    body = {**events.summary(image), "task_id": image.task_id}
    return JsonResponse(body, status=202)


def _accept(upload: UploadedFile, owner) -> Outcome:
    name = upload.name or "file"
    try:
        return Outcome(name, image=services.accept_upload(upload, owner))
    except pipeline.ImageRejected as error:
        return Outcome(name, error=error.message, code=error.code)


def _accepted_message(count: int) -> str:
    noun = "image" if count == 1 else f"{count} images"
    return f"Uploaded {noun}; the thumbnails are on their way."


def _wants_json(request: HttpRequest) -> bool:
    preferred = request.get_preferred_type(["text/html", "application/json"])
    return preferred == "application/json"


def _own_image(request: HttpRequest, pk: int) -> Image:
    images = Image.objects.owned_by(request.user).prefetch_related("thumbnails")
    return get_object_or_404(images, pk=pk)


def _card(image: Image, width: int) -> tuple[Image, Picture | None]:
    """The image with its status brought up to date, and its picture if any."""
    return services.sync_status(image), _picture(image, width)


def _picture(image: Image, width: int) -> Picture | None:
    """Srcsets of the thumbnails (prefetched, narrowest first) and, as the
    plain src, the narrowest JPEG at least ``width`` wide. Signed URLs."""
    by_format: dict[str, list] = {}
    for thumbnail in image.thumbnails.all():
        by_format.setdefault(thumbnail.format, []).append(thumbnail)
    jpegs = by_format.get("JPEG", [])
    if not jpegs:
        return None
    fallback = next((t for t in jpegs if t.width >= width), jpegs[-1])
    sources = [
        (content_type, _srcset(by_format[fmt]))
        for fmt, content_type in SOURCE_FORMATS
        if by_format.get(fmt)
    ]
    return Picture(
        sources=sources,
        jpeg_srcset=_srcset(jpegs),
        src=file_urls.of_thumbnail(fallback),
        width=fallback.width,
        height=fallback.height,
    )


def _srcset(thumbnails: list) -> str:
    """``url 160w, url 640w``; one candidate per width (small originals are
    never upscaled, so several specs can share a width)."""
    by_width: dict[int, str] = {}
    for thumbnail in thumbnails:
        by_width.setdefault(thumbnail.width, file_urls.of_thumbnail(thumbnail))
    return ", ".join(f"{url} {width}w" for width, url in by_width.items())
