"""Uploads through the service layer, thumbnails made by a real runworker,
files removed by a real Celery worker."""

import io

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.tasks import TaskResultStatus
from PIL import Image as PILImage

from tasks.models import TaskRecord
from tests.support import CORPUS, corpus_manifest, wait_finished, wait_for
from thumbnails import pipeline, services
from thumbnails.models import Image, Thumbnail
from thumbnails.tasks import make_thumbnails

pytestmark = pytest.mark.django_db(transaction=True)


def jpeg_bytes(size=(1200, 800), color=(200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    PILImage.new("RGB", size, color).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def upload(name: str, data: bytes) -> SimpleUploadedFile:
    return SimpleUploadedFile(name, data, content_type="application/octet-stream")


@pytest.fixture
def user(django_user_model):
    return django_user_model.objects.create_user("maker", password="pw-123456789")


def wait_image(image: Image, timeout: float = 60) -> Image:
    """Wait until the image is ready or failed and its job has ended: the task
    body marks the image a moment before its worker records the outcome, and
    a job enqueued meanwhile would join the one still running."""

    def final():
        image.refresh_from_db()
        if not services.sync_status(image).is_final:
            return False
        job = TaskRecord.objects.filter(pk=image.task_id).first()
        return job is None or job.is_finished

    wait_for(final, timeout=timeout, message=f"image {image.pk} to be ready or failed")
    return image


def test_upload_to_ready_through_the_thumbnailer_worker(worker, user, media_root):
    # Given the thumbnailer worker
    worker("thumbnailer")
    # When a user uploads a JPEG
    image = services.accept_upload(upload("../../etc/passwd.jpg", jpeg_bytes()), user)
    # Then it is stored under a generated name, and becomes ready with every spec
    assert "passwd" not in image.original.name
    assert image.original.name.startswith("originals/")
    wait_image(image)
    assert image.status == Image.Status.READY, image.error
    made = {(t.spec, t.format): (t.width, t.height) for t in image.thumbnails.all()}
    assert made == {
        ("small", "JPEG"): (160, 107), ("small", "WEBP"): (160, 107),
        ("medium", "JPEG"): (640, 427), ("medium", "WEBP"): (640, 427),
        ("large", "JPEG"): (1200, 800), ("large", "WEBP"): (1200, 800),
    }  # fmt: skip
    for thumbnail in image.thumbnails.all():
        assert (media_root / thumbnail.file.name).stat().st_size == thumbnail.byte_size
    # (the job marks its image ready, then its record is finished)
    wait_finished(make_thumbnails.get_result(image.task_id))
    record = TaskRecord.objects.get(pk=image.task_id)
    assert record.status == TaskResultStatus.SUCCESSFUL
    assert record.owner == user
    assert record.progress == 1.0


def test_running_twice_leaves_one_set(worker, user):
    worker("thumbnailer")
    image = wait_image(services.accept_upload(upload("a.jpg", jpeg_bytes()), user))
    first = sorted(Thumbnail.objects.values_list("file", flat=True))
    services.enqueue_thumbnails(image)
    wait_image(image)
    assert sorted(Thumbnail.objects.values_list("file", flat=True)) == first
    assert Thumbnail.objects.count() == 6


def test_same_bytes_reuse_the_same_thumbnail_files(worker, user):
    worker("thumbnailer")
    data = jpeg_bytes(color=(1, 2, 3))
    a = wait_image(services.accept_upload(upload("a.jpg", data), user))
    b = wait_image(services.accept_upload(upload("b.jpg", data), user))
    assert a.original.name != b.original.name
    assert set(a.thumbnails.values_list("file", flat=True)) == set(
        b.thumbnails.values_list("file", flat=True)
    )


def test_rejected_upload_stores_nothing(user, media_root):
    before = sorted(p for p in media_root.rglob("*") if p.is_file())
    with pytest.raises(pipeline.UnsupportedFormat, match="Accepted formats"):
        services.accept_upload(upload("x.eps", b"%!PS-Adobe-3.0 EPSF-3.0\n"), user)
    with pytest.raises(pipeline.CorruptImage):
        services.accept_upload(upload("cut.jpg", jpeg_bytes()[:2000]), user)
    assert Image.objects.count() == 0
    assert TaskRecord.objects.count() == 0
    assert sorted(p for p in media_root.rglob("*") if p.is_file()) == before


def test_delete_removes_files_through_celery(worker, celery_worker, user, media_root):
    worker("thumbnailer")
    celery_worker()
    image = wait_image(
        services.accept_upload(upload("a.jpg", jpeg_bytes((300, 200))), user)
    )
    paths = [image.original.name, *image.thumbnails.values_list("file", flat=True)]
    assert all((media_root / p).exists() for p in paths)
    services.delete_image(image)
    wait_for(
        lambda: not any((media_root / p).exists() for p in paths),
        timeout=60,
        message="the files to be removed",
    )
    assert not Image.objects.exists()
    assert not Thumbnail.objects.exists()


def test_delete_retries_until_storage_succeeds(
    worker, celery_worker, user, media_root, tmp_path
):
    # Given a storage whose deletes fail twice before working (in the Celery worker)
    state = tmp_path / "flaky-state"
    worker("thumbnailer")
    celery_worker(
        DJANGO_DEFAULT_STORAGE="tests.storage.FlakyStorage",
        FLAKY_STORAGE_STATE=state,
        FLAKY_STORAGE_FAILURES=2,
    )
    image = wait_image(
        services.accept_upload(upload("a.jpg", jpeg_bytes((300, 200))), user)
    )
    paths = [image.original.name, *image.thumbnails.values_list("file", flat=True)]
    # When the image is deleted
    services.delete_image(image)
    # Then the cleanup job fails twice, retries, and leaves no orphan file
    wait_for(
        lambda: not any((media_root / p).exists() for p in paths),
        timeout=60,
        message="the files to be removed after two storage failures",
    )
    assert state.read_text() == "2"
    record = TaskRecord.objects.get(task_path="thumbnails.tasks.delete_files")
    wait_for(lambda: TaskRecord.objects.get(pk=record.pk).status == "SUCCESSFUL")
    record.refresh_from_db()
    assert record.attempts == 3
    assert len(record.errors) == 2
    assert "simulated failure 1" in record.errors[0]["traceback"]


def test_webhook_is_signed_and_retried(worker, celery_worker, user):
    import hashlib
    import hmac
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    from django.conf import settings

    calls = []

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            calls.append((self.headers["X-Thumbnails-Signature"], body))
            self.send_response(500 if len(calls) <= 2 else 200)
            self.end_headers()

        def log_message(self, *args):
            pass

    # Given a receiver that fails the first two calls
    server = HTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        worker("thumbnailer")
        celery_worker()
        url = f"http://127.0.0.1:{server.server_port}/hook"
        # When an image with a webhook becomes ready
        image = services.accept_upload(
            upload("a.jpg", jpeg_bytes()), user, webhook_url=url
        )
        # Then the receiver gets a third, successful call, each one signed
        wait_for(lambda: len(calls) >= 3, timeout=60, message="three webhook calls")
    finally:
        server.shutdown()
    for signature, body in calls:
        key = settings.THUMBNAIL_WEBHOOK_SECRET.encode()
        expected = "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(signature, expected)
    import json

    payload = json.loads(calls[-1][1])
    assert payload["event"] == "image.ready"
    assert payload["image"] == image.pk
    assert len(payload["thumbnails"]) == 6


def test_admin_action_generates_thumbnails(worker, user, admin_client):
    # Given an image whose thumbnails were lost
    worker("thumbnailer")
    image = wait_image(services.accept_upload(upload("a.jpg", jpeg_bytes()), user))
    Thumbnail.objects.all().delete()
    # When staff run "Generate thumbnails" on it in the admin
    from django.urls import reverse

    response = admin_client.post(
        reverse("admin:thumbnails_image_changelist"),
        {"action": "generate_thumbnails", "_selected_action": [image.pk]},
        follow=True,
    )
    # Then the admin says one was queued, and the worker remakes them
    assert "Thumbnails of 1 image were queued." in response.content.decode()
    wait_for(lambda: Thumbnail.objects.filter(image=image).count() == 6, timeout=60)
    changelist = admin_client.get(reverse("admin:thumbnails_image_changelist"))
    assert b"<img src=" in changelist.content


def test_double_clicks_in_the_admin_the_api_and_the_command_make_one_job(
    user, admin_client, media_root
):
    from io import StringIO

    from django.core.management import call_command
    from django.urls import reverse
    from rest_framework.test import APIClient

    # Given two images, with no worker running yet (the first jobs wait)
    images = [
        services.accept_upload(upload(f"{n}.jpg", jpeg_bytes((60, 40))), user)
        for n in range(2)
    ]
    first_jobs = {image.pk: image.task_id for image in images}
    # When staff click "Generate thumbnails" twice on both
    for _ in range(2):
        admin_client.post(
            reverse("admin:thumbnails_image_changelist"),
            {
                "action": "generate_thumbnails",
                "_selected_action": [i.pk for i in images],
            },
        )
    # And the owner asks the API twice, for every spec by name
    api = APIClient()
    api.force_authenticate(user)
    for _ in range(2):
        response = api.post(
            f"/api/images/{images[0].pk}/regenerate/",
            {"specs": ["large", "medium", "small"]},
            format="json",
        )
        assert response.status_code == 202
    # And the command queues them all, twice
    for _ in range(2):
        call_command(
            "regenerate_thumbnails", "--all", stdout=StringIO(), stderr=StringIO()
        )
    # Then each image still has one job, the first
    jobs = TaskRecord.objects.filter(task_path=make_thumbnails.module_path)
    assert jobs.count() == 2
    for image in images:
        image.refresh_from_db()
        assert image.task_id == first_jobs[image.pk]
    # But another set of specs is another job
    call_command(
        "regenerate_thumbnails", "--all", "--spec", "small",
        stdout=StringIO(), stderr=StringIO(),
    )  # fmt: skip
    assert jobs.count() == 4


def test_regenerate_command_queues_jobs_for_the_workers(worker, user, media_root):
    from io import StringIO

    from django.core.management import call_command

    images = [
        services.accept_upload(upload(f"{n}.jpg", jpeg_bytes((60, 40))), user)
        for n in range(3)
    ]
    worker("thumbnailer")
    for image in images:
        wait_image(image)
    Thumbnail.objects.all().delete()
    out, err = StringIO(), StringIO()
    call_command("regenerate_thumbnails", "--all", stdout=out, stderr=err)
    assert "Queued thumbnails of 3 image(s)." in out.getvalue()
    assert "100%" in err.getvalue()
    wait_for(lambda: Thumbnail.objects.count() == 18, timeout=60, message="18 thumbs")


def test_regenerate_command_here(user, media_root):
    from io import StringIO

    from django.core.management import CommandError, call_command

    image = services.accept_upload(upload("a.jpg", jpeg_bytes()), user)
    out, err = StringIO(), StringIO()
    call_command(
        "regenerate_thumbnails",
        str(image.pk),
        "--spec",
        "small",
        "--here",
        stdout=out,
        stderr=err,
    )
    assert "Regenerated 1 of 1 image(s)." in out.getvalue()
    assert "100%" in err.getvalue()  # the progress bar
    assert set(image.thumbnails.values_list("spec", flat=True)) == {"small"}
    with pytest.raises(CommandError, match="Unknown spec huge"):
        call_command("regenerate_thumbnails", "--all", "--spec", "huge")
    with pytest.raises(CommandError, match="No image with id 999"):
        call_command("regenerate_thumbnails", "999")


def _manifest():
    return [(row["file"], row["expected_action"]) for row in corpus_manifest()]


@pytest.mark.parametrize(("name", "expected"), _manifest())
def test_corpus_upload_is_accepted_or_refused_clearly(name, expected, user, media_root):
    data = (CORPUS / name).read_bytes()
    if expected == "thumbnail OK":
        image = services.accept_upload(upload(name, data), user)
        assert image.width > 0
        assert image.status == Image.Status.PENDING
    else:
        with pytest.raises(pipeline.ImageRejected) as refused:
            services.accept_upload(upload(name, data), user)
        message = str(refused.value)
        assert message.endswith(".") and len(message) > 15
        assert "Traceback" not in message
        assert Image.objects.count() == 0


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/hook",
        "http://10.0.0.1/",
        "http://[::1]/",
        "http://169.254.169.254/",
    ],
)
def test_webhooks_to_private_addresses_are_refused_in_production(settings, url):
    from thumbnails import webhooks

    settings.THUMBNAIL_WEBHOOK_ALLOW_PRIVATE = False
    with pytest.raises(webhooks.ForbiddenWebhookAddress, match="not a public address"):
        webhooks.check_address(url)
    with pytest.raises(webhooks.ForbiddenWebhookAddress, match="http"):
        webhooks.check_address("file:///etc/passwd")
