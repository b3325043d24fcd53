"""Typed access to environment variables: the only place settings read them."""

import json
import os
from datetime import timedelta

from django.core.exceptions import ImproperlyConfigured

from tasks.conf import parse_duration

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def get_str(name: str, default: str = "") -> str:
    """Return the variable, or ``default`` when it is unset or empty."""
    return os.environ.get(name) or default


def get_bool(name: str, default: bool = False) -> bool:
    """Parse a flag such as ``DJANGO_DEBUG=1``; an unknown spelling is an error."""
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name}={raw!r} is not a boolean; use 1 or 0.")


def get_int(name: str, default: int) -> int:
    """Parse a whole number, failing with the variable's name on a bad value."""
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not a whole number.") from None


def get_list(name: str, default: list[str]) -> list[str]:
    """Parse a comma-separated list such as ``DJANGO_ALLOWED_HOSTS=a.com,b.com``."""
    raw = os.environ.get(name)
    if not raw:
        return list(default)
    return [item.strip() for item in raw.split(",") if item.strip()]


def get_float(name: str, default: float) -> float:
    """Parse a number such as ``TASKS_HEARTBEAT_SECONDS=0.5``."""
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not a number.") from None


def get_choice(name: str, choices: list[str]) -> str:
    """One of ``choices`` (the first when unset), else an error naming them."""
    raw = os.environ.get(name)
    if not raw:
        return choices[0]
    if raw not in choices:
        accepted = ", ".join(choices)
        raise ImproperlyConfigured(f"{name}={raw!r} is not one of {accepted}.")
    return raw


def get_duration(name: str, default: str) -> timedelta:
    """Parse a duration such as ``TASKS_RESULT_TTL=7d`` (see parse_duration)."""
    raw = os.environ.get(name) or default
    try:
        return parse_duration(raw)
    except ValueError as error:
        raise ImproperlyConfigured(f"{name}={raw!r}: {error}") from None


def get_json(name: str, default):
    """Parse a JSON value such as ``TASKS_QUEUE_CONCURRENCY={"thumbnailer": 4}``."""
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        return json.loads(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not JSON.") from None
