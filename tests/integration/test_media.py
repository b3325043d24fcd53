"""Uploaded files are served to their owner (and staff) only."""

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from tests.integration.test_thumbnail_jobs import jpeg_bytes
from thumbnails import services

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("redis_server", "media_root"),
]


def test_original_is_served_to_its_owner_only(client, django_user_model):
    owner = django_user_model.objects.create_user("own", password="pw-123456789")
    other = django_user_model.objects.create_user("oth", password="pw-123456789")
    upload = SimpleUploadedFile("a.jpg", jpeg_bytes((64, 64)))
    image = services.accept_upload(upload, owner)
    url = image.original.url
    assert url.startswith("/media/originals/")
    assert client.get(url).status_code == 302  # to the login page
    client.force_login(other)
    assert client.get(url).status_code == 404
    client.force_login(owner)
    response = client.get(url)
    assert response.status_code == 200
    assert response["Content-Type"] == "image/jpeg"
    assert b"".join(response.streaming_content)[:3] == b"\xff\xd8\xff"
    assert client.get("/media/../project/settings.py").status_code == 404
