"""The deployment of deploy/, whole, on this machine: real nginx (TLS) in
front of gunicorn and Daphne, two runworker units, the Celery worker and
beat, PostgreSQL and Redis, each on a loopback port of its own.

The units' ExecStart lines are run as systemd would run them (from the
rendered unit files, with the environment file they name); only nginx's
outer file (pid, logs, temp folders) is the test's. Every request goes
through nginx. `make test-deploy` runs this.
"""

from __future__ import annotations

import http.cookiejar
import json
import os
import re
import secrets
import shlex
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import psycopg
import pytest
import websocket

from project.redis_server import RedisServer, free_port
from tests.postgres_server import PostgresServer
from tests.support import ROOT, ManagedProcess, encoded, two_colour, wait_for

DEPLOY = ROOT / "deploy"
UNITS = ["gunicorn", "daphne", "runworker@1", "runworker@2", "celery", "celerybeat"]
READY = {
    "gunicorn": "Listening at",
    "daphne": "Listening on TCP address",
    "runworker@1": "listening on",
    "runworker@2": "listening on",
    "celery": " ready.",
    "celerybeat": "beat: Starting",
}
PASSWORD = "deploy-" + secrets.token_urlsafe(12)
IMAGES = 50

pytestmark = pytest.mark.slow


class Stack:
    """Everything the deployment runs, and a client that talks to nginx."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.ports = {
            name: free_port() for name in ("https", "http", "gunicorn", "daphne")
        }
        self.base = f"https://127.0.0.1:{self.ports['https']}"
        self.units: dict[str, ManagedProcess] = {}
        self.statuses: list[tuple[int, str]] = []
        self.cookies = http.cookiejar.CookieJar()
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # the test's self-signed certificate
        self.tls = context
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(self.cookies),
            urllib.request.HTTPSHandler(context=context),
            _NoRedirects,
        )

    # --- HTTP through nginx --------------------------------------------------

    def request(self, method: str, path: str, body=None, headers=None):
        request = urllib.request.Request(
            self.base + path, data=body, method=method, headers=headers or {}
        )
        try:
            with self.opener.open(request, timeout=30) as response:
                answer = (response.status, dict(response.headers), response.read())
        except urllib.error.HTTPError as error:
            answer = (error.code, dict(error.headers), error.read())
        self.statuses.append((answer[0], f"{method} {path}"))
        return answer

    def cookie(self, name: str) -> str:
        return next(c.value for c in self.cookies if c.name == name)

    def form_headers(self, content_type: str) -> dict:
        return {
            "Content-Type": content_type,
            "Referer": self.base + "/",
            "X-CSRFToken": self.cookie("csrftoken"),
        }

    def log_in(self, username: str) -> None:
        status, _, html = self.request("GET", "/accounts/login/")
        assert status == 200
        token = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', html)
        form = urllib.parse.urlencode(
            {
                "username": username,
                "password": PASSWORD,
                "csrfmiddlewaretoken": token.group(1).decode(),
            }
        ).encode()
        status, _, _ = self.request(
            "POST",
            "/accounts/login/",
            form,
            self.form_headers("application/x-www-form-urlencoded"),
        )
        assert status == 302, "the login was refused"

    def upload(self, name: str, data: bytes) -> dict:
        boundary = uuid.uuid4().hex
        body = (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="images"; '
                f'filename="{name}"\r\nContent-Type: image/jpeg\r\n\r\n'
            ).encode()
            + data
            + f"\r\n--{boundary}--\r\n".encode()
        )
        headers = {
            **self.form_headers(f"multipart/form-data; boundary={boundary}"),
            "Accept": "application/json",
        }
        status, _, answer = self.request("POST", "/images/upload/", body, headers)
        assert status == 202, answer
        return json.loads(answer)

    def websocket(self, path: str) -> websocket.WebSocket:
        session = "; ".join(f"{c.name}={c.value}" for c in self.cookies)
        return websocket.create_connection(
            f"wss://127.0.0.1:{self.ports['https']}{path}",
            sslopt={"cert_reqs": ssl.CERT_NONE},
            origin=self.base,
            cookie=session,
            timeout=30,
        )

    # --- Starting and stopping -------------------------------------------------

    def values(self) -> dict[str, str]:
        """deploy/render.py's values for this machine."""
        var = self.root / "var"
        return {
            "APP_DIR": str(ROOT),
            "APP_USER": "root",
            "ENV_FILE": str(self.root / "env"),
            "SERVER_NAME": "127.0.0.1",
            "HTTPS_LISTEN": f"127.0.0.1:{self.ports['https']}",
            "HTTP_LISTEN": f"127.0.0.1:{self.ports['http']}",
            "TLS_CERT": str(self.root / "tls.crt"),
            "TLS_KEY": str(self.root / "tls.key"),
            "GUNICORN_PORT": str(self.ports["gunicorn"]),
            "GUNICORN_WORKERS": "2",
            "DAPHNE_PORT": str(self.ports["daphne"]),
            "VAR_DIR": str(var),
            "STATIC_ROOT": str(var / "static"),
            "MEDIA_ROOT": str(var / "media"),
            "RUNWORKER_PROCESSES": "1",
            "CELERY_CONCURRENCY": "2",
        }

    def render(self, template: str) -> str:
        settings = [
            arg for k, v in self.values().items() for arg in ("--set", f"{k}={v}")
        ]
        done = subprocess.run(
            [sys.executable, str(DEPLOY / "render.py"), template, *settings],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        return done.stdout

    def unit_command(self, unit: str) -> list[str]:
        """The ExecStart of a rendered unit (runworker@N from the template)."""
        template = re.sub(r"@\d+$", "@", unit)
        text = self.render(f"systemd/thumbnails-{template}.service")
        [line] = [line for line in text.splitlines() if line.startswith("ExecStart=")]
        return shlex.split(line.removeprefix("ExecStart="))

    def environment(self) -> dict[str, str]:
        """The units' EnvironmentFile, as systemd reads it, over a bare PATH."""
        env = {"PATH": os.environ["PATH"], "LANG": "C.UTF-8", "PYTHONUNBUFFERED": "1"}
        for line in (self.root / "env").read_text().splitlines():
            name, sep, value = line.partition("=")
            if sep and not line.startswith("#"):
                env[name] = value
        return env


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


@pytest.fixture(scope="module")
def stack(process_logs):
    root = Path(tempfile.mkdtemp(prefix="thumbnails-deploy-"))
    stack = Stack(root)
    postgres = PostgresServer(free_port())
    redis = RedisServer(root / "redis", port=free_port())
    nginx = None
    try:
        postgres.start()
        redis.start()
        _write_environment(stack, postgres, redis)
        _prepare(stack)
        for unit in UNITS:
            stack.units[unit] = ManagedProcess(
                unit, stack.unit_command(unit), stack.environment(), process_logs
            )
        for unit, process in stack.units.items():
            process.wait_ready(READY[unit], timeout=60, message=f"{unit} to start")
        nginx = _start_nginx(stack, process_logs)
        wait_for(
            lambda: _healthy(stack), timeout=30, message="nginx to answer /healthz"
        )
        yield stack
    finally:
        if nginx is not None:
            nginx.stop()
        for process in reversed(stack.units.values()):
            process.stop()
        redis.stop()
        postgres.stop()
        subprocess.run(["rm", "-rf", str(root)], check=False)


def _healthy(stack: Stack) -> bool:
    try:
        return stack.request("GET", "/healthz")[0] == 200
    except urllib.error.URLError:
        return False  # nginx not listening yet


def _write_environment(stack: Stack, postgres: PostgresServer, redis) -> None:
    """The EnvironmentFile: deploy/env.example with this machine's values."""
    var = stack.root / "var"
    values = {
        "DJANGO_DEBUG": "0",
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1",
        "DJANGO_CSRF_TRUSTED_ORIGINS": stack.base,
        "DJANGO_PUBLIC_URL": stack.base,
        "DJANGO_BEHIND_PROXY": "1",
        "DJANGO_VAR_DIR": str(var),
        "DJANGO_MEDIA_ROOT": str(var / "media"),
        "DJANGO_MEDIA_ACCEL_PREFIX": "/protected-media/",
        "DATABASE_URL": postgres.url,
        "REDIS_URL": redis.url,
        "METRICS_TOKEN": "deploy-metrics-token",
        # Short timings, so that the killed worker's task comes back in seconds.
        "TASKS_HEARTBEAT_SECONDS": "0.5",
        "TASKS_STALE_AFTER_SECONDS": "4",
        "TASKS_RECONCILE_INTERVAL_SECONDS": "1",
    }
    example = (DEPLOY / "env.example").read_text().splitlines()
    names = {line.partition("=")[0] for line in example if "=" in line}
    assert set(values) >= names, f"env.example names {names - set(values)}"
    lines = [f"{name}={value}" for name, value in values.items()]
    (stack.root / "env").write_text("\n".join(lines) + "\n")


def _prepare(stack: Stack) -> None:
    """What the README's production section does before starting the units."""
    env = stack.environment()
    manage = [str(ROOT / ".venv" / "bin" / "python"), "manage.py"]
    for command in (
        ["migrate", "--noinput"],
        ["collectstatic", "--noinput"],
        [
            "createsuperuser",
            "--noinput",
            "--username",
            "deployer",
            "--email",
            "d@x.org",
        ],
    ):
        subprocess.run(
            [*manage, *command], cwd=ROOT, check=True, capture_output=True,
            env={**env, "DJANGO_SUPERUSER_PASSWORD": PASSWORD},
        )  # fmt: skip
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(stack.root / "tls.key"), "-out", str(stack.root / "tls.crt")],
        check=True, capture_output=True,
    )  # fmt: skip


def _start_nginx(stack: Stack, logs: Path) -> ManagedProcess:
    """Debian's nginx with the rendered deploy/nginx.conf as its one server."""
    site = stack.root / "thumbnails.conf"
    site.write_text(stack.render("nginx.conf"))
    temp = stack.root / "nginx"
    temp.mkdir()
    main = stack.root / "nginx-main.conf"
    main.write_text(
        f"daemon off;\nuser root;\nworker_processes 1;\npid {temp}/nginx.pid;\n"
        f"error_log {temp}/error.log warn;\nevents {{ worker_connections 1024; }}\n"
        "http {\n  include /etc/nginx/mime.types;\n"
        f"  access_log {temp}/access.log;\n"
        + "".join(
            f"  {kind}_temp_path {temp}/{kind};\n"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        + f"  include {site};\n}}\n"
    )
    nginx = ManagedProcess(
        "nginx", ["/usr/sbin/nginx", "-c", str(main), "-e", str(temp / "error.log")],
        {"PATH": os.environ["PATH"]}, logs,
    )  # fmt: skip
    return nginx


# --- The tests ------------------------------------------------------------------


def test_static_files_and_health_come_through_nginx(stack):
    status, headers, _ = stack.request("GET", "/static/thumbnails/thumbnails.css")
    assert status == 200
    assert headers["X-Served-By"] == "nginx"  # nginx read the file itself
    status, _, body = stack.request("GET", "/healthz")
    assert status == 200
    assert json.loads(body)["ok"] is True
    bearer = {"Authorization": "Bearer deploy-metrics-token"}
    status, _, text = stack.request("GET", "/metrics", headers=bearer)
    assert status == 200
    assert b"tasks_workers 2.0" in text  # both runworker units' processes
    plain = urllib.request.Request(f"http://127.0.0.1:{stack.ports['http']}/")
    with pytest.raises(urllib.error.HTTPError) as redirect:
        urllib.request.build_opener(_NoRedirects).open(plain, timeout=10)
    assert redirect.value.code == 301
    assert redirect.value.headers["Location"].startswith("https://")


def test_the_seeds_echo_works_through_nginx(stack):
    socket = stack.websocket("/chat/")
    try:
        socket.send("hello world")
        assert socket.recv() == "You said: hello world"
    finally:
        socket.close()


def test_fifty_uploads_are_made_ready_though_a_worker_is_killed(stack):
    # Given a signed-in user following their jobs over a websocket
    stack.log_in("deployer")
    events: list[dict] = []
    socket = stack.websocket("/ws/jobs/")
    reader = threading.Thread(target=_read_events, args=(socket, events), daemon=True)
    reader.start()
    # When 50 images are uploaded, and one runworker is killed midway
    accepted = []
    for number in range(IMAGES):
        data = encoded(two_colour((900, 600)), "JPEG", quality=85)
        accepted.append(stack.upload(f"photo{number}.jpg", data))
        if number == IMAGES // 3:
            wait_for(lambda: _done(stack) >= 5, timeout=60, message="some work done")
            victim = stack.units["runworker@1"]
            os.killpg(victim.pid, signal.SIGKILL)  # the unit's supervisor and child
    # Then all 50 end ready
    wait_for(lambda: _done(stack) == IMAGES, timeout=180, message="all 50 ready")
    status, _, body = stack.request("GET", "/api/images/")
    images = json.loads(body)["results"]
    assert sorted(image["status"] for image in images) == ["ready"] * IMAGES
    # And both workers did some of it
    supervisors = {stack.units[u].pid for u in ("runworker@1", "runworker@2")}
    assert _supervisors_that_worked(stack) == supervisors
    # And the websocket carried every job to its end
    task_ids = {image["task_id"] for image in accepted}
    wait_for(lambda: task_ids <= _successful(events), timeout=30, message="every event")
    socket.close()
    # And media came from nginx, after Django's access check
    thumbnail = images[0]["thumbnails"][0]
    status, headers, data = stack.request("GET", _path(thumbnail["url"]))
    assert status == 200
    assert headers["X-Served-By"] == "nginx"
    assert len(data) == thumbnail["byte_size"]
    # And no request got a server error
    assert [s for s in stack.statuses if s[0] >= 500] == []


def _read_events(socket: websocket.WebSocket, events: list[dict]) -> None:
    try:
        while True:
            events.append(json.loads(socket.recv()))
    except Exception:
        return  # closed


def _successful(events: list[dict]) -> set[str]:
    return {e["id"] for e in list(events) if e.get("status") == "SUCCESSFUL"}


def _done(stack: Stack) -> int:
    status, _, body = stack.request("GET", "/api/images/")
    assert status == 200
    return sum(image["status"] == "ready" for image in json.loads(body)["results"])


def _supervisors_that_worked(stack: Stack) -> set[int]:
    """Supervisor pids in the worker ids of the thumbnail jobs' attempts."""
    url = stack.environment()["DATABASE_URL"]
    with psycopg.connect(url) as connection:
        rows = connection.execute(
            "SELECT worker_ids FROM tasks_taskrecord "
            "WHERE task_path = 'thumbnails.tasks.make_thumbnails'"
        ).fetchall()
    workers = {worker for (ids,) in rows for worker in ids}
    return {int(worker.split(":")[1]) for worker in workers}


def _path(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return f"{parts.path}?{parts.query}"
