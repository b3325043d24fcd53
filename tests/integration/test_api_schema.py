"""The OpenAPI schema: served, valid without warnings, and accurate enough to
fuzz. Schemathesis sends the requests the schema allows (and some it does not)
to the Django WSGI app in this process, as an authenticated user: no request
may end in a server error, and documented responses must match the schema."""

from __future__ import annotations

import io
import re

import pytest
import schemathesis
from django.core.cache import cache
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.core.wsgi import get_wsgi_application
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir
from PIL import Image as PILImage
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
)

from thumbnails import services
from thumbnails.models import Image

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("redis_server", "media_root"),
]

CHECKS = [not_a_server_error, response_schema_conformance, content_type_conformance]


@pytest.fixture(scope="module", autouse=True)
def _hypothesis_home(tmp_path_factory):
    """Hypothesis' files (charmap cache, ...) go to a tmp dir, not the repo."""
    set_hypothesis_home_dir(tmp_path_factory.mktemp("hypothesis"))
    yield
    set_hypothesis_home_dir(None)


@pytest.fixture(autouse=True)
def _no_throttle_history():
    """Throttle counts live in the cache, keyed by user id (reused after flush)."""
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def user(django_user_model):
    return django_user_model.objects.create_user("fuzzer", password="pw-123456789")


@pytest.fixture
def seeded(user) -> Image:
    """One image of the user's, so that requests also reach existing objects."""
    buffer = io.BytesIO()
    PILImage.new("RGB", (40, 30), "teal").save(buffer, "PNG")
    return services.accept_upload(
        SimpleUploadedFile("seed.png", buffer.getvalue()), user
    )


@pytest.fixture
def auth_headers(user) -> dict[str, str]:
    return {"Authorization": f"Token {Token.objects.create(user=user).key}"}


@pytest.fixture
def api_schema():
    return schemathesis.openapi.from_wsgi(
        "/api/schema/?format=json", get_wsgi_application()
    )


# Every operation of the schema (test_every_operation_is_fuzzed keeps this
# list complete). Schemathesis' own `from_fixture` loader fails on pytest 9.2
# (it sets Node._nodeid, which pytest 9.2 no longer has), so each operation is
# a plain parametrized test driving `operation.as_strategy()` with Hypothesis.
OPERATIONS = [
    ("GET", "/api/images/"),
    ("POST", "/api/images/"),
    ("GET", "/api/images/{id}/"),
    ("DELETE", "/api/images/{id}/"),
    ("POST", "/api/images/{id}/regenerate/"),
    ("GET", "/api/tasks/{id}/"),
    ("POST", "/api/tasks/{id}/cancel/"),
]


def test_every_operation_is_fuzzed(api_schema):
    found = {
        (operation.method.upper(), operation.path)
        for operation in (result.ok() for result in api_schema.get_all_operations())
    }
    assert found == set(OPERATIONS)


@pytest.mark.parametrize(("method", "path"), OPERATIONS)
def test_no_request_is_a_server_error(api_schema, auth_headers, seeded, method, path):
    operation = api_schema[path][method]
    ids = [{}]
    if "{id}" in path:  # random ids are all 404s: aim some cases at the seed
        ids.append({"id": seeded.task_id if "/tasks/" in path else seeded.pk})
    cases = st.one_of(
        operation.as_strategy(mode, path_parameters=fixed or None)
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
        for fixed in ids
    )

    @given(case=cases)
    @settings(
        max_examples=25,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def call(case) -> None:
        case.call_and_validate(headers=auth_headers, checks=CHECKS)

    call()


def test_schema_is_valid_without_warnings(tmp_path):
    # Raises SchemaGenerationError on any warning or an invalid schema.
    call_command(
        "spectacular", "--validate", "--fail-on-warn", "--file", tmp_path / "s.yaml"
    )


def test_schema_and_docs_are_served():
    client = APIClient()
    schema = client.get("/api/schema/?format=json")
    assert schema.status_code == 200
    document = schema.json()
    upload = document["paths"]["/api/images/"]["post"]["requestBody"]["content"]
    file_schema = document["components"]["schemas"]["ImageUpload"]
    assert list(upload) == ["multipart/form-data"]
    file_field = file_schema["properties"]["file"]
    assert (file_field["type"], file_field["format"]) == ("string", "binary")
    assert set(document["paths"]["/api/images/"]["post"]["responses"]) == {
        "202",
        "400",
        "413",
    }
    docs = client.get("/api/docs/")
    assert docs.status_code == 200
    assert b"swagger" in docs.content.lower()
    assert Image.objects.count() == 0


def test_the_api_docs_load_nothing_from_elsewhere():
    from django.contrib.staticfiles import finders

    client = APIClient()
    for url in ("/api/docs/", "/api/redoc/"):
        html = client.get(url).content.decode()
        # No CDN, no web fonts: every asset is one of our static files
        assert not re.findall(r"https?://", html), url
        assets = re.findall(r'(?:src|href)="/static/([^"]+)"', html)
        assert any(asset.endswith(".js") for asset in assets), url
        for asset in assets:
            assert finders.find(asset), asset
