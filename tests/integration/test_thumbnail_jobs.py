"""Uploads through the service layer, thumbnails made by a real runworker,
files removed by a real Celery worker."""

import io
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.tasks import TaskResultStatus
from PIL import Image as PILImage

from tasks.models import TaskRecord
from tests.support import wait_for
from thumbnails import pipeline, services
from thumbnails.models import Image, Thumbnail

pytestmark = pytest.mark.django_db(transaction=True)

CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "corpus" / "images"


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
    def final():
        image.refresh_from_db()
        return services.sync_status(image).is_final

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
