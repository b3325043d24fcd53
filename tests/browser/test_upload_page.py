"""Uploading in a real browser: Daphne, a real thumbnailer worker, Chromium."""

import re

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image as PILImage
from playwright.sync_api import expect

from tests.browser.pages import PASSWORD, job_events, sign_in, wait_for_frame
from thumbnails import services

pytestmark = pytest.mark.django_db(transaction=True)

JOB_TIMEOUT_MS = 60_000
EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n"
# A signed URL of a small JPEG thumbnail (thumbnails.file_urls).
THUMBNAIL = re.compile(r"/media/thumbnails/\w\w/\w+/small\.jpg\?image=\d+&expires=")


@pytest.fixture
def user(django_user_model):
    return django_user_model.objects.create_user("uploader", password=PASSWORD)


@pytest.fixture
def photo(tmp_path):
    """A 2000x1500 JPEG with a colour gradient."""
    width, height = 2000, 1500
    red = PILImage.linear_gradient("L").resize((width, height))
    green = red.transpose(PILImage.Transpose.ROTATE_90).resize((width, height))
    blue = PILImage.new("L", (width, height), 160)
    path = tmp_path / "gradient.jpg"
    PILImage.merge("RGB", (red, green, blue)).save(path, "JPEG", quality=90)
    return path


def expect_thumbnail_shown(image):
    expect(image).to_have_attribute("src", THUMBNAIL)
    expect(image).to_have_js_property("complete", True)
    assert image.evaluate("img => img.naturalWidth") > 0, "the thumbnail did not load"


def test_upload_shows_progress_then_thumbnails(page, web_server, worker, user, photo):
    # Given a thumbnailer worker, and the user on the upload page
    worker("thumbnailer")
    events = job_events(page)
    sign_in(page, web_server, "uploader", "/images/upload/")
    # When a JPEG is chosen in the file input
    page.set_input_files('input[type="file"]', photo)
    # Then its card reaches "ready" live, with a thumbnail in place of the bar
    card = page.locator("#upload-queue .card").first
    expect(card.locator('[data-role="status"]')).to_have_text(
        "ready", timeout=JOB_TIMEOUT_MS
    )
    expect(card.locator("progress")).to_have_count(0)
    expect(card).to_contain_text("2000 \N{MULTIPLICATION SIGN} 1500 JPEG")
    expect_thumbnail_shown(card.locator(".card-thumb img"))
    # And the websocket carried the job's progress up to done
    task_id = card.get_attribute("data-task-id")
    wait_for_frame(
        page,
        events,
        lambda e: e.get("id") == task_id and e.get("status") == "SUCCESSFUL",
    )
    mine = [event for event in events if event.get("id") == task_id]
    assert any(event["progress"] == 1.0 for event in mine), mine

    # When the detail page is opened from the card
    card.locator("a.card-name").click()
    # Then it shows every size in WebP and JPEG srcsets
    section = page.locator(".image-detail")
    expect(section.locator('[data-role="status"]')).to_have_text("ready")
    expect(section).to_contain_text("2000 \N{MULTIPLICATION SIGN} 1500 pixels")
    webp = section.locator('picture source[type="image/webp"]')
    jpeg = section.locator("picture img")
    for sizes, suffix in ((webp, "webp"), (jpeg, "jpg")):
        srcset = sizes.get_attribute("srcset")
        for spec, width in (("small", 160), ("medium", 640), ("large", 1600)):
            assert re.search(rf"/{spec}\.{suffix}\?\S+ {width}w", srcset), srcset
    expect(jpeg).to_have_js_property("complete", True)
    assert ".webp?" in jpeg.evaluate("img => img.currentSrc")


def test_bad_file_shows_the_clear_error(page, web_server, user):
    sign_in(page, web_server, "uploader", "/images/upload/")
    page.set_input_files(
        'input[type="file"]',
        files=[
            {"name": "drawing.eps", "mimeType": "application/postscript", "buffer": EPS}
        ],
    )
    card = page.locator("#upload-queue .card").first
    expect(card.locator('[data-role="status"]')).to_have_text("refused")
    expect(card.locator(".error")).to_have_text(
        "Unsupported image format: EPS. Accepted formats: JPEG, PNG, GIF, WebP, "
        "HEIC/HEIF, AVIF."
    )
    expect(card).to_contain_text("drawing.eps")


@pytest.mark.parametrize("where", ["list", "detail"])
def test_open_page_swaps_in_thumbnails_when_the_job_ends(
    page, web_server, worker, user, photo, where
):
    # Given a pending image (no worker yet) shown on the list or detail page
    upload = SimpleUploadedFile("waiting.jpg", photo.read_bytes())
    image = services.accept_upload(upload, user)
    path = "/images/" if where == "list" else f"/images/{image.pk}/"
    sign_in(page, web_server, "uploader", path)
    live = page.locator(f"#image-{image.pk}")
    expect(live.locator('[data-role="status"]')).to_have_text("pending")
    # (its placeholder shows meanwhile, no thumbnail yet)
    expect(live.locator("img.placeholder")).to_have_count(1)
    expect(live.locator("picture")).to_have_count(0)
    # When a worker starts and makes the thumbnails
    worker("thumbnailer")
    # Then the page shows them without a reload
    expect(live.locator('[data-role="status"]')).to_have_text(
        "ready", timeout=JOB_TIMEOUT_MS
    )
    image_element = live.locator("picture img")
    expect(image_element).to_have_js_property("complete", True)
    assert image_element.evaluate("img => img.naturalWidth") > 0
