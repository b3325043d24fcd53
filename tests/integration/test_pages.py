"""The upload, list and detail pages through Django's test client (no JS)."""

import io

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from PIL import Image as PILImage

from tasks.models import TaskRecord
from thumbnails import services
from thumbnails.models import Image

pytestmark = pytest.mark.django_db

EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n"


def jpeg(name="photo.jpg", size=(300, 200)) -> SimpleUploadedFile:
    buffer = io.BytesIO()
    PILImage.new("RGB", size, (40, 120, 200)).save(buffer, "JPEG")
    return SimpleUploadedFile(name, buffer.getvalue(), content_type="image/jpeg")


def eps(name="drawing.eps") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, EPS, content_type="application/postscript")


@pytest.fixture(autouse=True)
def media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path
    return tmp_path


@pytest.fixture
def user(django_user_model):
    return django_user_model.objects.create_user("alice")  # no password: fast to make


@pytest.fixture
def other(django_user_model):
    return django_user_model.objects.create_user("bob")  # no password: fast to make


@pytest.fixture
def signed_in(client, user):
    client.force_login(user)
    return client


def stored_files(root) -> list:
    return [path for path in root.rglob("*") if path.is_file()]


@pytest.mark.parametrize(
    "url",
    [
        reverse("thumbnails:list"),
        reverse("thumbnails:upload"),
        reverse("thumbnails:detail", args=[1]),
        reverse("thumbnails:card", args=[1]),
    ],
)
def test_pages_need_a_login(client, url):
    response = client.get(url)
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login") + "?next=")


def test_upload_page_has_a_multiple_file_input_and_csrf(signed_in):
    response = signed_in.get(reverse("thumbnails:upload"))
    assert response.status_code == 200
    html = response.content.decode()
    assert 'enctype="multipart/form-data"' in html
    assert 'type="file" name="images"' in html and "multiple" in html
    assert "csrfmiddlewaretoken" in html


def test_plain_upload_is_accepted_and_listed(signed_in, user):
    # When two images are posted as a plain multipart form
    response = signed_in.post(
        reverse("thumbnails:upload"), {"images": [jpeg("a.jpg"), jpeg("b.jpg")]}
    )
    # Then the browser is sent to the list, which shows both, newest first
    assert response.status_code == 302
    assert response["Location"] == reverse("thumbnails:list")
    page = signed_in.get(response["Location"])
    html = page.content.decode()
    assert "Uploaded 2 images" in html
    assert html.index("b.jpg") < html.index("a.jpg")
    assert 'data-status="pending"' in html
    assert list(Image.objects.values_list("original_name", "owner")) == [
        ("b.jpg", user.pk),
        ("a.jpg", user.pk),
    ]


def test_bad_file_gets_the_clear_message_and_nothing_is_stored(signed_in, media):
    response = signed_in.post(reverse("thumbnails:upload"), {"images": [eps()]})
    assert response.status_code == 400
    html = response.content.decode()
    assert "drawing.eps" in html
    assert "Unsupported image format: EPS. Accepted formats: JPEG" in html
    assert not Image.objects.exists()
    assert not TaskRecord.objects.exists()
    assert stored_files(media) == []


def test_each_file_is_answered_on_its_own(signed_in):
    response = signed_in.post(
        reverse("thumbnails:upload"), {"images": [jpeg("good.jpg"), eps("bad.eps")]}
    )
    assert response.status_code == 400
    outcomes = {o.name: o.error for o in response.context["outcomes"]}
    assert outcomes["good.jpg"] == ""
    assert outcomes["bad.eps"].startswith("Unsupported image format: EPS.")
    assert list(Image.objects.values_list("original_name", flat=True)) == ["good.jpg"]


def test_no_file_is_a_form_error(signed_in):
    response = signed_in.post(reverse("thumbnails:upload"), {})
    assert response.status_code == 400
    assert "Choose at least one image to upload." in response.content.decode()


def test_json_upload_answers_202_with_the_task_id(signed_in):
    response = signed_in.post(
        reverse("thumbnails:upload"),
        {"images": jpeg()},
        headers={"accept": "application/json"},
    )
    assert response.status_code == 202
    body = response.json()
    image = Image.objects.get()
    assert body["id"] == image.pk
    assert body["task_id"] == image.task_id != ""
    assert TaskRecord.objects.filter(pk=body["task_id"]).exists()
    assert body["status"] == "pending"
    assert body["card_url"] == reverse("thumbnails:card", args=[image.pk])


def test_json_upload_of_a_bad_file_answers_400_with_the_message(signed_in, media):
    response = signed_in.post(
        reverse("thumbnails:upload"),
        {"images": eps()},
        headers={"accept": "application/json"},
    )
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "unsupported_format"
    assert body["error"].startswith("Unsupported image format: EPS.")
    assert not Image.objects.exists()
    assert stored_files(media) == []


def test_json_upload_takes_one_file_per_request(signed_in):
    response = signed_in.post(
        reverse("thumbnails:upload"),
        {"images": [jpeg("a.jpg"), jpeg("b.jpg")]},
        headers={"accept": "application/json"},
    )
    assert response.status_code == 400
    assert response.json() == {"error": "Send one file per request."}
    assert not Image.objects.exists()


def test_detail_and_card_of_own_image(signed_in, user):
    image = services.accept_upload(jpeg("mine.jpg"), user)
    detail = signed_in.get(reverse("thumbnails:detail", args=[image.pk]))
    assert detail.status_code == 200
    assert "300 \N{MULTIPLICATION SIGN} 200" in detail.content.decode()
    card = signed_in.get(reverse("thumbnails:card", args=[image.pk]))
    assert card.status_code == 200
    assert f'id="image-{image.pk}"' in card.content.decode()


def test_other_users_image_is_not_found(signed_in, other):
    theirs = services.accept_upload(jpeg("theirs.jpg"), other)
    for name in ("thumbnails:detail", "thumbnails:card"):
        assert signed_in.get(reverse(name, args=[theirs.pk])).status_code == 404
    assert (
        "theirs.jpg" not in signed_in.get(reverse("thumbnails:list")).content.decode()
    )


def test_list_is_paginated(signed_in, user, settings):
    for index in range(26):
        services.accept_upload(jpeg(f"p{index:02}.jpg", size=(20, 20)), user)
    first = signed_in.get(reverse("thumbnails:list")).content.decode()
    second = signed_in.get(reverse("thumbnails:list") + "?page=2").content.decode()
    assert "p25.jpg" in first and "p02.jpg" in first and "p01.jpg" not in first
    assert "p01.jpg" in second and "p00.jpg" in second
    assert "Page 2 of 2" in second


def test_pending_images_show_their_placeholder(signed_in, user):
    # Given an image whose thumbnails are not made yet
    image = services.accept_upload(jpeg("soon.jpg"), user)
    assert image.placeholder.startswith("data:image/webp;base64,")
    red, green, blue = (int(image.color[i : i + 2], 16) for i in (1, 3, 5))
    assert abs(red - 40) + abs(green - 120) + abs(blue - 200) < 15  # the JPEG's
    # Then its card and its page show the placeholder, in its colour
    for name in ("thumbnails:card", "thumbnails:detail"):
        html = signed_in.get(reverse(name, args=[image.pk])).content.decode()
        assert f'class="placeholder" src="{image.placeholder}"' in html
        assert f"background-color: {image.color}" in html


def test_pages_offer_avif_then_webp_then_jpeg_through_signed_urls(signed_in, user):
    from thumbnails.models import Thumbnail

    image = services.accept_upload(jpeg("made.jpg"), user)
    for fmt, extension in (("JPEG", "jpg"), ("WEBP", "webp"), ("AVIF", "avif")):
        Thumbnail.objects.create(
            image=image, spec="small", format=fmt, width=160, height=107,
            file=f"thumbnails/aa/x/small.{extension}", byte_size=1,
        )  # fmt: skip
    html = signed_in.get(reverse("thumbnails:detail", args=[image.pk])).content.decode()
    avif, webp, img = (
        html.index('type="image/avif"'),
        html.index('type="image/webp"'),
        html.index("<img src="),
    )
    assert avif < webp < img
    assert "small.jpg?image=" in html and "signature=" in html
