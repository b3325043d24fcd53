"""Settings from the environment: production is safe, bad values fail clearly."""

import os
import secrets
import subprocess
import sys

import pytest
from django.core.exceptions import ImproperlyConfigured

from project import env
from project.settings import celery_url_for, channel_layers_for
from tests.support import ROOT


def _manage(*args: str, **environ: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_")}
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={**base, "DJANGO_SETTINGS_MODULE": "project.settings", **environ},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_check_deploy_is_clean_under_production_settings():
    result = _manage(
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
        DJANGO_DEBUG="0",
        DJANGO_SECRET_KEY=secrets.token_urlsafe(50),
        DJANGO_ALLOWED_HOSTS="thumbs.example.com",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_production_without_a_secret_key_refuses_to_start():
    result = _manage("check", DJANGO_DEBUG="0")
    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY must be set" in result.stderr


def test_channel_layer_never_times_out_idle_receives():
    host = channel_layers_for("redis://127.0.0.1:1/0")["default"]["CONFIG"]["hosts"][0]
    assert host == {"address": "redis://127.0.0.1:1/0", "socket_timeout": None}


def test_celery_spells_unix_sockets_its_own_way():
    assert celery_url_for("unix:///v/redis.sock") == "redis+socket:///v/redis.sock"
    assert celery_url_for("redis://h:1/0") == "redis://h:1/0"


@pytest.mark.parametrize(
    ("raw", "expected"), [("1", True), ("off", False), ("Yes", True)]
)
def test_get_bool(monkeypatch, raw, expected):
    monkeypatch.setenv("FLAG", raw)
    assert env.get_bool("FLAG") is expected


def test_get_bool_rejects_nonsense_with_the_variable_name(monkeypatch):
    monkeypatch.setenv("FLAG", "maybe")
    with pytest.raises(ImproperlyConfigured, match="FLAG='maybe' is not a boolean"):
        env.get_bool("FLAG")


def test_get_list_and_int(monkeypatch):
    monkeypatch.setenv("HOSTS", "a.com, b.com,")
    monkeypatch.setenv("N", "x")
    assert env.get_list("HOSTS", []) == ["a.com", "b.com"]
    with pytest.raises(ImproperlyConfigured, match="N='x' is not a whole number"):
        env.get_int("N", 1)
