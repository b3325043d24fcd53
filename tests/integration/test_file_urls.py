"""File URLs a client is given work for that client with no cookie and no
token, until they expire or their image is deleted, and for no one else.

Thumbnails are made by a real runworker; the files are fetched from a real
Daphne over HTTP, as <img>, curl or a phone would."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from django.test import Client
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from tests.support import BLUE, RED, decoded, encoded, near, two_colour, wait_for
from thumbnails import file_urls, services, webhooks
from thumbnails.models import Image

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("redis_server", "media_root"),
]


@pytest.fixture
def alice(django_user_model):
    return django_user_model.objects.create_user("alice", password="pw-123456789")


@pytest.fixture
def token_client(alice) -> APIClient:
    """An API client with only a token: no session, no cookie."""
    client = APIClient()
    key = Token.objects.create(user=alice).key
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client


def picture(fmt: str, size=(1200, 800), orientation: int = 1) -> bytes:
    return encoded(two_colour(size), fmt, orientation, quality=90)


def upload(client: APIClient, data: bytes, name: str) -> dict:
    from django.core.files.uploadedfile import SimpleUploadedFile

    response = client.post(
        "/api/images/", {"file": SimpleUploadedFile(name, data)}, format="multipart"
    )
    assert response.status_code == 202, response.content
    return response.json()


def until_ready(client: APIClient, url: str, worker) -> dict:
    def ready():
        body = client.get(url).json()
        return body if body["status"] in ("ready", "failed") else None

    try:
        body = wait_for(ready, timeout=60, message="the image to be ready")
    except AssertionError as error:
        raise AssertionError(f"{error}\n{worker.output()[-3000:]}") from None
    assert body["status"] == "ready", body["error"]
    return body


def fetch(base: str, url: str, **headers) -> tuple[int, dict, bytes]:
    """GET the path and query of ``url`` from ``base`` with no credentials."""
    parts = urlsplit(url)
    request = urllib.request.Request(
        f"{base}{parts.path}?{parts.query}", headers=headers
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def test_a_token_client_fetches_every_file_through_the_urls_it_was_given(
    worker, web_server, token_client
):
    # Given a client with only a token, whose upload the worker has made ready
    thumbnailer = worker("thumbnailer")
    accepted = upload(token_client, picture("JPEG"), "photo.jpg")
    body = until_ready(token_client, accepted["url"], thumbnailer)
    urls = [(t["url"], t["width"], t["height"]) for t in body["thumbnails"]]
    urls.append((body["original_url"], 1200, 800))
    # When it fetches each URL with no cookie and no token
    for url, width, height in urls:
        status, headers, data = fetch(web_server, url)
        # Then each is the file it names: its size, its pixels
        assert status == 200, (url, data[:200])
        image = decoded(data).convert("RGB")
        assert image.size == (width, height)
        assert near(image.getpixel((2, 2)), BLUE)
        assert near(image.getpixel((width - 3, height - 3)), RED)
        # Cacheable by anyone until the URL expires, with a strong ETag
        max_age = int(headers["Cache-Control"].split("max-age=")[1].split(",")[0])
        assert headers["Cache-Control"].startswith("public")
        assert 3600 <= max_age <= 7200
        assert headers["ETag"].startswith('"')
        again, _, empty = fetch(web_server, url, **{"If-None-Match": headers["ETag"]})
        assert (again, empty) == (304, b"")


@pytest.mark.parametrize(
    ("fmt", "name"), [("HEIF", "IMG_0001.HEIC"), ("AVIF", "photo.avif")]
)
def test_heic_and_avif_uploads_end_ready_the_right_way_up(
    worker, token_client, fmt, name
):
    # Given a phone photo stored landscape, to be shown rotated 90 degrees
    thumbnailer = worker("thumbnailer")
    accepted = upload(token_client, picture(fmt, orientation=6), name)
    assert (accepted["format"], accepted["width"], accepted["height"]) == (
        fmt,
        800,
        1200,
    )
    body = until_ready(token_client, accepted["url"], thumbnailer)
    # Then every thumbnail is portrait, the blue corner at the top right
    anonymous = Client()
    for thumbnail in body["thumbnails"]:
        response = anonymous.get(thumbnail["url"])
        image = decoded(b"".join(response.streaming_content)).convert("RGB")
        assert image.width < image.height
        assert near(image.getpixel((image.width - 3, 2)), BLUE)
        assert near(image.getpixel((2, image.height - 3)), RED)


@pytest.fixture
def image(alice) -> Image:
    from django.core.files.uploadedfile import SimpleUploadedFile

    data = picture("PNG", (60, 40))
    return services.accept_upload(SimpleUploadedFile("a.png", data), alice)


def signed_original(image: Image) -> str:
    return file_urls.url(image.original.name, image.pk)


def test_a_tampered_url_is_refused(image):
    url = urlsplit(signed_original(image))
    query = {key: value[0] for key, value in parse_qs(url.query).items()}
    tampered = [
        {**query, "signature": query["signature"][:-2] + "xx"},
        {**query, "expires": str(int(query["expires"]) + 3600)},
        {**query, "image": str(image.pk + 1)},
        {key: value for key, value in query.items() if key != "expires"},
    ]
    client = Client()
    for changed in tampered:
        response = client.get(f"{url.path}?{urlencode(changed)}")
        assert response.status_code == 403
        assert response.content.decode() in (
            "This file link is not valid.",
            "This file link is incomplete.",
        )
    assert client.get(signed_original(image)).status_code == 200


def test_an_expired_url_is_refused(image, settings, monkeypatch):
    settings.THUMBNAIL_URL_TTL = 60
    url = signed_original(image)
    # Two windows later the link has expired
    later = time.time() + 121
    monkeypatch.setattr(file_urls.time, "time", lambda: later)
    response = Client().get(url)
    assert response.status_code == 403
    assert response.content == b"This file link has expired; ask for a new one."


def test_a_deleted_images_urls_stop_working_at_once(image):
    url = signed_original(image)
    assert Client().get(url).status_code == 200
    services.delete_image(image)  # the files go later, in a Celery job
    assert Client().get(url).status_code == 404


def test_unsigned_paths_are_for_the_signed_in_owner_and_staff(
    image, django_user_model, admin_client
):
    path = f"/media/{image.original.name}"
    anonymous = Client().get(path)
    assert anonymous.status_code == 302
    assert anonymous["Location"].startswith("/accounts/login/")
    owner = Client()
    owner.force_login(image.owner)
    response = owner.get(path)
    assert response.status_code == 200
    assert response["Cache-Control"].startswith("private")
    stranger = Client()
    stranger.force_login(django_user_model.objects.create_user("bob", password="x"))
    assert stranger.get(path).status_code == 404
    assert admin_client.get(path).status_code == 200
    assert owner.get("/media/../project/settings.py").status_code == 404
    assert response["Content-Type"] == "image/png"


def test_the_storage_mode_hands_out_the_storages_own_urls(image, settings):
    settings.THUMBNAIL_FILE_URLS = "storage"
    assert signed_original(image) == f"/media/{image.original.name}"


def test_webhook_payloads_carry_absolute_signed_urls(image, settings):
    import json

    from thumbnails.models import Thumbnail

    settings.PUBLIC_URL = "https://thumbs.example.com"
    Thumbnail.objects.create(
        image=image, spec="small", format="JPEG", width=60, height=40,
        file="thumbnails/ab/x/small.jpg", byte_size=10,
    )  # fmt: skip
    body = json.loads(webhooks.payload(image.pk, "ready"))
    [thumbnail] = body["thumbnails"]
    url = urlsplit(thumbnail["url"])
    assert (url.scheme, url.netloc) == ("https", "thumbs.example.com")
    assert url.path == "/media/thumbnails/ab/x/small.jpg"
    assert file_urls.verify(url.path.removeprefix("/media/"), _query(url.query))


def _query(raw: str):
    from django.http import QueryDict

    return QueryDict(raw)
