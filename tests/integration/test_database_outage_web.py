"""The web side while PostgreSQL is down: 503 with Retry-After (JSON for the
API, a page for people), nothing stored by an upload, websockets closed with
4503, and every page and socket back by itself when the server returns.

On the session's own PostgreSQL server (`make test-postgres`), stopped and
started again; Daphne and gunicorn are real processes.
"""

import io
import json
import urllib.error
import urllib.request
import uuid

import pytest
import websocket
from django.conf import settings
from django.db import connection
from django.test import Client
from playwright.sync_api import expect
from rest_framework.authtoken.models import Token

from project.redis_server import free_port
from tasks.context import enqueued_by
from tasks.models import TaskRecord
from tests import tasks
from tests.browser.pages import PASSWORD, job_events, sign_in, wait_for_frame
from tests.conftest import ON_POSTGRES
from tests.support import VENV_BIN, encoded, http_ok, start_daphne, two_colour, wait_for
from thumbnails.models import Image

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.slow,
    pytest.mark.skipif(not ON_POSTGRES, reason="stops the PostgreSQL server"),
]
CLOSE_UNAVAILABLE = 4503


@pytest.fixture
def alice(django_user_model):
    return django_user_model.objects.create_user("alice", password=PASSWORD)


@pytest.fixture
def servers(process_env, process_logs, start_process):
    """Daphne (HTTP and websockets) and gunicorn (HTTP), as in production."""
    daphne_port, gunicorn_port = free_port(), free_port()
    # A request waits 1 s for a connection before it answers 503 (5 s by default).
    env = {**process_env, "DJANGO_DB_POOL_TIMEOUT": "1"}
    daphne = start_daphne({**env, "PORT": str(daphne_port)}, process_logs)
    gunicorn = start_process(
        "gunicorn",
        [str(VENV_BIN / "gunicorn"), "project.wsgi", "--workers", "1",
         "--bind", f"127.0.0.1:{gunicorn_port}"],
        DJANGO_DB_POOL_TIMEOUT=1,
    )  # fmt: skip
    gunicorn_url = f"http://127.0.0.1:{gunicorn_port}"
    wait_for(lambda: http_ok(gunicorn_url + "/"), message="gunicorn to serve /")
    yield {"daphne": (f"http://127.0.0.1:{daphne_port}", daphne),
           "gunicorn": (gunicorn_url, gunicorn)}  # fmt: skip
    daphne.stop()


def test_while_the_database_is_down_the_web_answers_503_and_recovers(
    postgres, servers, alice, media_root
):
    token = Token.objects.create(user=alice).key
    cookie = _session_cookie(alice)
    files_before = _files(media_root)
    daphne_url = servers["daphne"][0]
    # When PostgreSQL is down
    postgres.shut_down()
    for url, _process in servers.values():
        # Then the health check names the database
        status, headers, body = _get(url + "/healthz")
        assert status == 503 and "database" in json.loads(body)["failing"]
        assert headers["Retry-After"]
        # The API answers JSON 503 with Retry-After
        status, headers, body = _get(url + "/api/images/", token=token)
        assert status == 503, body
        assert headers["Content-Type"] == "application/json"
        assert "briefly unavailable" in json.loads(body)["detail"]
        assert int(headers["Retry-After"]) > 0
        # A page answers a 503 page for people, no traceback or debug page
        status, headers, body = _get(url + "/images/", cookie=cookie)
        assert status == 503 and headers["Retry-After"]
        assert "Briefly unavailable" in body and "Traceback" not in body
        # An upload is refused and stores nothing
        status, _headers, body = _upload(url, token)
        assert status == 503, body
    assert _websocket_close_code(daphne_url, cookie) == CLOSE_UNAVAILABLE
    # And once it is back, everything answers again, by itself
    postgres.start_again()
    for url, process in servers.values():
        wait_for(
            lambda url=url: _get(url + "/api/images/", token=token)[0] == 200,
            timeout=30,
            message=f"{process.name} to answer again",
        )
        assert _get(url + "/images/", cookie=cookie)[0] == 200
        assert _get(url + "/healthz")[0] == 200
        assert process.alive()
        log = process.output()
        assert "Traceback" not in log
        assert log.count("Database unavailable") == 1, log[-3000:]
    assert _websocket_snapshot(daphne_url, cookie)["type"] == "snapshot"
    assert _files(media_root) == files_before
    connection.close()  # (this process' own was cut too)
    assert not Image.objects.exists()


@pytest.mark.browser
def test_a_page_reconnects_after_the_outage_with_a_fresh_snapshot(
    postgres, page, web_server, worker, alice, tmp_path
):
    # Given alice's jobs page following her running task
    worker("default")
    page.add_init_script(RECORD_SOCKETS)
    frames = job_events(page)
    sign_in(page, web_server, "alice", "/jobs/")
    done, started = str(tmp_path / "done"), str(tmp_path / "started")
    with enqueued_by(alice):
        result = tasks.slow_record_run.enqueue(done, "k", 2.0, started)
    status = page.locator(f"#job-{result.id} [data-role='status']")
    expect(status).to_have_text("RUNNING", timeout=15_000)
    # When the database goes down, and the page's socket drops meanwhile
    before = {id(frame) for frame in frames}
    postgres.shut_down()
    page.evaluate("window.recordedSockets.at(-1).close()")
    # Then its reconnects are closed with 4503, and it says it is reconnecting
    page.wait_for_function(f"window.recordedCloses.includes({CLOSE_UNAVAILABLE})")
    expect(page.locator("#live-status")).to_be_visible()
    wait_for(lambda: tasks.runs(done), message="the task to finish its work")
    # And once the database is back the page is live again, its fresh
    # snapshot showing the outcome that was written meanwhile
    postgres.start_again()
    expect(page.locator("#live-status")).to_be_hidden(timeout=30_000)
    expect(status).to_have_text("SUCCESSFUL", timeout=10_000)
    fresh = wait_for_frame(
        page,
        frames,
        lambda frame: frame["type"] == "snapshot" and id(frame) not in before,
    )
    assert result.id in [task["id"] for task in fresh["tasks"]]
    connection.close()  # (this process' own was cut too)
    assert TaskRecord.objects.get(pk=result.id).status == "SUCCESSFUL"


# Every websocket the page opens, and the close code of each.
RECORD_SOCKETS = """
(() => {
  const Native = window.WebSocket;
  window.recordedSockets = [];
  window.recordedCloses = [];
  window.WebSocket = function (url, protocols) {
    const socket = new Native(url, protocols);
    window.recordedSockets.push(socket);
    socket.addEventListener("close", (event) => window.recordedCloses.push(event.code));
    return socket;
  };
  window.WebSocket.prototype = Native.prototype;
})();
"""


def _session_cookie(user) -> str:
    client = Client()
    client.force_login(user)
    name = settings.SESSION_COOKIE_NAME
    return f"{name}={client.cookies[name].value}"


def _get(url: str, *, token: str = "", cookie: str = "") -> tuple[int, dict, str]:
    headers = {"Authorization": f"Token {token}"} if token else {}
    if cookie:
        headers["Cookie"] = cookie
    return _send(urllib.request.Request(url, headers=headers))


def _upload(url: str, token: str) -> tuple[int, dict, str]:
    boundary = uuid.uuid4().hex
    image = encoded(two_colour(), "PNG")
    body = io.BytesIO()
    body.write(f"--{boundary}\r\n".encode())
    body.write(b'Content-Disposition: form-data; name="file"; filename="a.png"\r\n')
    body.write(b"Content-Type: image/png\r\n\r\n" + image + b"\r\n")
    body.write(f"--{boundary}--\r\n".encode())
    request = urllib.request.Request(
        url + "/api/images/",
        data=body.getvalue(),
        headers={
            "Authorization": f"Token {token}",
            "Content-Type": f"multipart/form-data; boundary={boundary}",
        },
    )
    return _send(request)


def _send(request) -> tuple[int, dict, str]:
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read().decode()


def _websocket(url: str, cookie: str) -> websocket.WebSocket:
    return websocket.create_connection(
        url.replace("http://", "ws://") + "/ws/jobs/",
        cookie=cookie,
        origin=url,
        timeout=30,
    )


def _websocket_close_code(url: str, cookie: str) -> int:
    socket = _websocket(url, cookie)
    try:
        opcode, frame = socket.recv_data_frame(control_frame=True)
        assert opcode == websocket.ABNF.OPCODE_CLOSE, frame
        return int.from_bytes(frame.data[:2], "big")
    finally:
        socket.close()


def _websocket_snapshot(url: str, cookie: str) -> dict:
    socket = _websocket(url, cookie)
    try:
        return json.loads(socket.recv())
    finally:
        socket.close()


def _files(root) -> set[str]:
    return {str(path) for path in root.rglob("*") if path.is_file()}
