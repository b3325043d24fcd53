"""The JSON API's contract, through DRF's APIClient in this process: every
endpoint and status code, owner isolation, auth, throttling; and one upload
made ready by a real runworker, then deleted by a real Celery worker."""

from __future__ import annotations

import io
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from django.core.cache import cache
from django.core.files.uploadedfile import SimpleUploadedFile
from django.tasks import TaskResultStatus
from PIL import Image as PILImage
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from tasks.models import TaskRecord
from tests.support import CORPUS, wait_for
from thumbnails import api, services
from thumbnails.models import Image

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("redis_server", "media_root"),
]

IMAGES = "/api/images/"
IMAGE_FIELDS = {
    "id", "url", "status", "error", "original_name", "format", "width", "height",
    "byte_size", "original_url", "placeholder", "color", "webhook_url",
    "created_at", "task_id", "task_url", "thumbnails",
}  # fmt: skip
TASK_FIELDS = {
    "id", "task", "queue", "status", "progress", "progress_message", "attempts",
    "errors", "enqueued_at", "started_at", "finished_at", "return_value",
}  # fmt: skip


def jpeg_bytes(size=(1200, 800), color=(200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    PILImage.new("RGB", size, color).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def a_file(name: str = "photo.jpg", data: bytes | None = None) -> SimpleUploadedFile:
    data = jpeg_bytes() if data is None else data
    return SimpleUploadedFile(name, data, content_type="application/octet-stream")


def post_image(client: APIClient, file=None, **fields):
    body = {"file": file if file is not None else a_file(), **fields}
    return client.post(IMAGES, body, format="multipart")


def stored_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def client_for(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


@pytest.fixture
def alice(django_user_model):
    return django_user_model.objects.create_user("alice", password="pw-123456789")


@pytest.fixture
def bob(django_user_model):
    return django_user_model.objects.create_user("bob", password="pw-123456789")


@pytest.fixture
def as_alice(alice) -> APIClient:
    return client_for(alice)


@pytest.fixture
def as_bob(bob) -> APIClient:
    return client_for(bob)


@pytest.fixture
def alices_image(alice) -> Image:
    return services.accept_upload(a_file("mine.jpg", jpeg_bytes((300, 200))), alice)


@pytest.fixture(autouse=True)
def _no_throttle_history():
    """Throttle counts live in the cache: no test sees another's uploads."""
    cache.clear()
    yield
    cache.clear()


# --- Upload -------------------------------------------------------------------


def test_upload_is_accepted_with_its_task_and_urls(as_alice, alice):
    # When Alice uploads a JPEG
    response = post_image(as_alice, a_file("../holiday.jpg"))
    # Then it is accepted, pending, with its task and absolute URLs
    assert response.status_code == 202, response.content
    body = response.json()
    assert set(body) == IMAGE_FIELDS
    image = Image.objects.get()
    assert body["id"] == image.pk
    assert body["url"] == f"http://testserver/api/images/{image.pk}/"
    assert response["Location"] == body["url"]
    assert body["status"] == "pending"
    assert (body["format"], body["width"], body["height"]) == ("JPEG", 1200, 800)
    assert body["byte_size"] == image.byte_size > 0
    assert body["original_name"] == "holiday.jpg"
    assert body["thumbnails"] == []
    assert body["task_id"] == image.task_id
    assert body["task_url"] == f"http://testserver/api/tasks/{image.task_id}/"
    record = TaskRecord.objects.get(pk=image.task_id)
    assert (record.owner, record.queue_name) == (alice, "thumbnailer")


def test_upload_keeps_an_http_webhook_url(as_alice):
    response = post_image(as_alice, webhook_url="https://example.com/hook")
    assert response.status_code == 202, response.content
    assert response.json()["webhook_url"] == "https://example.com/hook"
    assert Image.objects.get().webhook_url == "https://example.com/hook"


@pytest.mark.skipif(not CORPUS.is_dir(), reason=f"no image corpus at {CORPUS}")
@pytest.mark.parametrize(
    ("name", "code", "words"),
    [
        ("zero_bb.eps", "unsupported_format", "Accepted formats: JPEG, PNG"),
        ("truncated_jpeg.jpg", "corrupt_image", ""),
        ("decompression_bomb.gif", "decompression_bomb", ""),
    ],
)
def test_refused_files_get_a_clear_400_and_store_nothing(
    as_alice, media_root, name, code, words
):
    # Given the files stored so far
    before = stored_files(media_root)
    # When Alice uploads a file from the corpus that the pipeline refuses
    response = post_image(as_alice, a_file(name, (CORPUS / name).read_bytes()))
    # Then she is told why, in a sentence, with a code for programs
    assert response.status_code == 400, response.content
    body = response.json()
    assert body["code"] == code
    [message] = body["file"]
    assert words in message
    assert message.endswith(".") and "Traceback" not in message
    # And nothing was stored: no row, no file, no task
    assert Image.objects.count() == 0
    assert TaskRecord.objects.count() == 0
    assert stored_files(media_root) == before


def test_too_large_is_413(as_alice, settings, media_root):
    settings.THUMBNAIL_MAX_UPLOAD_BYTES = 1024
    before = stored_files(media_root)
    response = post_image(as_alice)
    assert response.status_code == 413, response.content
    assert response.json()["code"] == "file_too_large"
    assert "the largest accepted upload is 1.0 KB" in response.json()["file"][0]
    assert Image.objects.count() == 0
    assert stored_files(media_root) == before


def test_missing_file_is_400_with_a_clear_message(as_alice):
    response = as_alice.post(IMAGES, {}, format="multipart")
    assert response.status_code == 400
    assert response.json() == {
        "file": [
            "No file was submitted: send the image as the multipart form field 'file'."
        ]
    }
    assert TaskRecord.objects.count() == 0


@pytest.mark.parametrize("url", ["ftp://example.com/hook", "not a url"])
def test_webhook_url_must_be_http(as_alice, media_root, url):
    before = stored_files(media_root)
    response = post_image(as_alice, webhook_url=url)
    assert response.status_code == 400
    assert response.json() == {"webhook_url": ["Enter a valid http(s) URL."]}
    assert Image.objects.count() == 0
    assert stored_files(media_root) == before


def test_upload_as_json_is_415(as_alice):
    response = as_alice.post(IMAGES, {"file": "abc"}, format="json")
    assert response.status_code == 415


# --- List, detail, delete -----------------------------------------------------


def test_list_is_paginated_own_and_newest_first(as_alice, alice, bob):
    first = services.accept_upload(a_file("1.jpg"), alice)
    second = services.accept_upload(a_file("2.jpg"), alice)
    services.accept_upload(a_file("bobs.jpg"), bob)
    response = as_alice.get(IMAGES)
    assert response.status_code == 200
    body = response.json()
    assert body["count"] == 2
    assert [item["id"] for item in body["results"]] == [second.pk, first.pk]
    assert set(body["results"][0]) == IMAGE_FIELDS


def test_detail_shows_the_image(as_alice, alices_image):
    response = as_alice.get(f"{IMAGES}{alices_image.pk}/")
    assert response.status_code == 200
    body = response.json()
    assert set(body) == IMAGE_FIELDS
    assert (body["width"], body["height"], body["status"]) == (300, 200, "pending")


def test_detail_follows_a_task_failed_behind_its_back(as_alice, alices_image):
    # Given the image's job was failed by the reconciler (the task body never ran)
    TaskRecord.objects.filter(pk=alices_image.task_id).update(
        status=TaskResultStatus.FAILED,
        errors=[
            {
                "exception_class_path": "tasks.exceptions.WorkerLost",
                "traceback": 'Traceback (most recent call last):\n  File "x.py"\n'
                "tasks.exceptions.WorkerLost: The worker stopped heart-beating.",
            }
        ],
    )
    # When Alice looks at the image
    body = as_alice.get(f"{IMAGES}{alices_image.pk}/").json()
    # Then it is failed, with the reason
    assert body["status"] == "failed"
    assert body["error"].endswith("The worker stopped heart-beating.")
    # And the task shows the reason without the traceback
    task = as_alice.get(body["task_url"]).json()
    assert task["status"] == "FAILED"
    assert task["errors"] == [
        "tasks.exceptions.WorkerLost: The worker stopped heart-beating."
    ]
    assert task["return_value"] is None


def test_unknown_image_is_404(as_alice):
    assert as_alice.get(f"{IMAGES}999999/").status_code == 404
    assert as_alice.get(f"{IMAGES}abc/").status_code == 404


def test_delete_is_204(as_alice, alices_image):
    response = as_alice.delete(f"{IMAGES}{alices_image.pk}/")
    assert response.status_code == 204
    assert not Image.objects.exists()
    assert as_alice.get(f"{IMAGES}{alices_image.pk}/").status_code == 404


# --- Regenerate ---------------------------------------------------------------


def test_regenerate_queues_a_new_task(as_alice, alices_image):
    old = alices_image.task_id
    url = f"{IMAGES}{alices_image.pk}/regenerate/"
    response = as_alice.post(url, {"specs": ["small"]}, format="json")
    assert response.status_code == 202, response.content
    body = response.json()
    assert body["task_id"] != old
    assert body["task_url"].endswith(f"/api/tasks/{body['task_id']}/")
    record = TaskRecord.objects.get(pk=body["task_id"])
    assert record.args == [alices_image.pk, ["small"]]
    assert Image.objects.get().task_id == body["task_id"]


def test_regenerate_without_a_body_makes_every_spec(as_alice, alices_image):
    response = as_alice.post(f"{IMAGES}{alices_image.pk}/regenerate/")
    assert response.status_code == 202, response.content
    record = TaskRecord.objects.get(pk=response.json()["task_id"])
    assert record.args == [alices_image.pk, None]


@pytest.mark.parametrize("specs", [["huge"], [], "small"])
def test_regenerate_refuses_unknown_specs(as_alice, alices_image, specs):
    url = f"{IMAGES}{alices_image.pk}/regenerate/"
    response = as_alice.post(url, {"specs": specs}, format="json")
    assert response.status_code == 400
    assert "specs" in response.json()
    assert TaskRecord.objects.count() == 1  # only the upload's


def test_unknown_spec_message_names_the_known_ones(as_alice, alices_image):
    url = f"{IMAGES}{alices_image.pk}/regenerate/"
    response = as_alice.post(url, {"specs": ["small", "huge"]}, format="json")
    assert response.json() == {
        "specs": {"1": ['Unknown spec "huge". Known specs: small, medium, large.']}
    }


# --- Tasks --------------------------------------------------------------------


def test_task_shows_its_state(as_alice, alices_image):
    response = as_alice.get(f"/api/tasks/{alices_image.task_id}/")
    assert response.status_code == 200
    body = response.json()
    assert set(body) == TASK_FIELDS
    assert body["id"] == alices_image.task_id
    assert body["task"] == "thumbnails.tasks.make_thumbnails"
    assert (body["queue"], body["status"]) == ("thumbnailer", "READY")
    assert (body["attempts"], body["errors"], body["return_value"]) == (0, [], None)


def test_task_return_value_only_when_successful(as_alice, alices_image):
    TaskRecord.objects.filter(pk=alices_image.task_id).update(
        status=TaskResultStatus.SUCCESSFUL, return_value={"thumbnails": 6}
    )
    body = as_alice.get(f"/api/tasks/{alices_image.task_id}/").json()
    assert body["return_value"] == {"thumbnails": 6}


def test_unknown_task_is_404(as_alice):
    assert as_alice.get("/api/tasks/nope/").status_code == 404


def test_owner_cancels_a_waiting_job(as_alice, alices_image):
    response = as_alice.post(f"/api/tasks/{alices_image.task_id}/cancel/")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "FAILED"
    assert body["errors"] == [
        "tasks.exceptions.TaskCancelled: Cancelled before it ran."
    ]
    # A second cancel has nothing left to do
    again = as_alice.post(f"/api/tasks/{alices_image.task_id}/cancel/")
    assert again.status_code == 409
    assert again.json()["detail"] == (
        "The job has already finished (FAILED): nothing to cancel."
    )


def test_staff_cancel_any_job_and_other_users_none(as_bob, alices_image, admin_user):
    url = f"/api/tasks/{alices_image.task_id}/cancel/"
    assert as_bob.post(url).status_code == 404
    assert TaskRecord.objects.get().status == TaskResultStatus.READY
    assert client_for(admin_user).post(url).status_code == 200
    assert TaskRecord.objects.get().status == TaskResultStatus.FAILED


# --- Isolation, authentication ------------------------------------------------


def test_another_users_image_and_task_are_404(as_bob, alices_image):
    image_url = f"{IMAGES}{alices_image.pk}/"
    assert as_bob.get(image_url).status_code == 404
    assert as_bob.delete(image_url).status_code == 404
    assert as_bob.post(f"{image_url}regenerate/").status_code == 404
    assert as_bob.get(f"/api/tasks/{alices_image.task_id}/").status_code == 404
    assert as_bob.get(IMAGES).json()["count"] == 0
    # Alice's image and its one task are untouched
    assert Image.objects.get().task_id == alices_image.task_id
    assert TaskRecord.objects.count() == 1


def test_token_authentication(alice):
    token = Token.objects.create(user=alice)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    assert client.get(IMAGES).status_code == 200
    assert post_image(client).status_code == 202
    assert Image.objects.get().owner == alice
    client.credentials(HTTP_AUTHORIZATION="Token not-a-real-token")
    refused = client.get(IMAGES)
    # 403, not 401: SessionAuthentication comes first and has no challenge.
    assert refused.status_code in (401, 403)
    assert refused.json() == {"detail": "Invalid token."}


def test_session_authentication(alice):
    client = APIClient()
    assert client.login(username="alice", password="pw-123456789")
    assert client.get(IMAGES).status_code == 200


def test_anonymous_is_refused_and_nothing_stored(alices_image, media_root):
    client = APIClient()
    before = stored_files(media_root)
    requests = [
        client.get(IMAGES),
        post_image(client),
        client.get(f"{IMAGES}{alices_image.pk}/"),
        client.delete(f"{IMAGES}{alices_image.pk}/"),
        client.post(f"{IMAGES}{alices_image.pk}/regenerate/"),
        client.get(f"/api/tasks/{alices_image.task_id}/"),
    ]
    assert {response.status_code for response in requests} <= {401, 403}
    assert Image.objects.count() == 1
    assert TaskRecord.objects.count() == 1
    assert stored_files(media_root) == before


# --- Throttling ---------------------------------------------------------------


def test_uploads_are_throttled_per_user(monkeypatch, as_alice, as_bob):
    # Given a rate of two uploads a minute (DRF reads rates once, at import)
    monkeypatch.setattr(api.UploadRateThrottle, "THROTTLE_RATES", {"uploads": "2/min"})
    # When Alice sends a third upload within the minute (refused ones count)
    assert as_alice.post(IMAGES, {}, format="multipart").status_code == 400
    assert as_alice.post(IMAGES, {}, format="multipart").status_code == 400
    response = post_image(as_alice)
    # Then she is told to wait, and nothing is stored
    assert response.status_code == 429
    assert int(response["Retry-After"]) > 0
    assert Image.objects.count() == 0
    # And reads, and other users' uploads, are not throttled
    assert as_alice.get(IMAGES).status_code == 200
    assert post_image(as_bob).status_code == 202


# --- End to end, with real workers ----------------------------------------------


def wait_until_final(client: APIClient, url: str, worker_process) -> dict:
    """Poll the image until ready or failed; on timeout, show the worker's log."""

    def final() -> dict | None:
        body = client.get(url).json()
        return body if body["status"] in ("ready", "failed") else None

    try:
        return wait_for(final, timeout=60, message=f"{url} to be ready or failed")
    except AssertionError as error:
        raise AssertionError(f"{error}\n{worker_process.output()[-4000:]}") from None


def wait_until_finished(client: APIClient, url: str) -> dict:
    """Poll a task until its outcome is recorded."""

    def finished() -> dict | None:
        body = client.get(url).json()
        return body if body["finished_at"] else None

    return wait_for(finished, message=f"{url} to finish")


def media_path(media_root: Path, url: str) -> Path:
    return media_root / urlsplit(url).path.split("/media/", 1)[1]


def test_upload_becomes_ready_through_the_thumbnailer(worker, as_alice, media_root):
    # Given the thumbnailer worker
    thumbnailer = worker("thumbnailer")
    # When Alice uploads a JPEG and follows its URL
    accepted = post_image(as_alice).json()
    body = wait_until_final(as_alice, accepted["url"], thumbnailer)
    # Then it is ready with six thumbnails, each with a URL to its file
    assert body["status"] == "ready", body["error"]
    made = {
        (t["spec"], t["format"]): (t["width"], t["height"]) for t in body["thumbnails"]
    }
    assert made == {
        ("small", "JPEG"): (160, 107), ("small", "WEBP"): (160, 107),
        ("medium", "JPEG"): (640, 427), ("medium", "WEBP"): (640, 427),
        ("large", "JPEG"): (1200, 800), ("large", "WEBP"): (1200, 800),
    }  # fmt: skip
    for thumbnail in body["thumbnails"]:
        assert thumbnail["url"].startswith("http://testserver/media/")
        size = media_path(media_root, thumbnail["url"]).stat().st_size
        assert size == thumbnail["byte_size"]
    # And its task says so, once the worker has recorded the outcome (the image
    # is ready as soon as the task body saved it, a moment before that)
    task = wait_until_finished(as_alice, accepted["task_url"])
    assert (task["status"], task["progress"]) == ("SUCCESSFUL", 1.0)
    assert task["return_value"] == {"image": accepted["id"], "thumbnails": 6}


def test_delete_removes_the_files_through_celery(
    worker, celery_worker, as_alice, media_root
):
    thumbnailer = worker("thumbnailer")
    celery_worker()
    accepted = post_image(as_alice, a_file(data=jpeg_bytes((300, 200)))).json()
    body = wait_until_final(as_alice, accepted["url"], thumbnailer)
    assert body["status"] == "ready", body["error"]
    image = Image.objects.get()
    paths = [media_root / image.original.name]
    paths += [media_path(media_root, t["url"]) for t in body["thumbnails"]]
    assert all(path.exists() for path in paths)
    # When Alice deletes it
    assert as_alice.delete(accepted["url"]).status_code == 204
    # Then its files are removed by the guaranteed job
    wait_for(
        lambda: not any(path.exists() for path in paths),
        timeout=60,
        message="the image's files to be removed",
    )
    assert as_alice.get(accepted["url"]).status_code == 404


def test_upload_with_a_private_webhook_is_refused_in_production(settings, tmp_path):
    from django.contrib.auth import get_user_model
    from rest_framework.test import APIClient

    settings.THUMBNAIL_WEBHOOK_ALLOW_PRIVATE = False
    user = get_user_model().objects.create_user("hooker", password="pw-123456789")
    client = APIClient()
    client.force_authenticate(user)
    from django.core.files.uploadedfile import SimpleUploadedFile

    from tests.integration.test_thumbnail_jobs import jpeg_bytes

    response = client.post(
        "/api/images/",
        {
            "file": SimpleUploadedFile("a.jpg", jpeg_bytes((64, 64))),
            "webhook_url": "http://127.0.0.1:9/x",
        },
        format="multipart",
    )
    assert response.status_code == 400
    assert "not a public address" in response.json()["webhook_url"][0]
