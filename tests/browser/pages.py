"""What the browser tests do on every page: sign in, listen to /ws/jobs/."""

import json
import time

from playwright.sync_api import expect

PASSWORD = "pw-for-the-browser-42"


def sign_in(page, web_server: str, username: str, next_path: str) -> None:
    page.goto(f"{web_server}/accounts/login/?next={next_path}")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(web_server + next_path)


def job_events(page) -> list[dict]:
    """Every JSON frame the page receives on /ws/jobs/, as it arrives."""
    frames: list[dict] = []

    def follow(socket):
        if "/ws/jobs/" in socket.url:
            socket.on(
                "framereceived", lambda payload: frames.append(json.loads(payload))
            )

    page.on("websocket", follow)
    return frames


def wait_for_frame(page, frames: list[dict], matches, timeout_ms: int = 10_000) -> dict:
    """The first frame in ``frames`` that ``matches``, waiting for it to arrive.

    Polls with Playwright's own wait so that its event loop keeps delivering
    frames while we look.
    """
    deadline = time.monotonic() + timeout_ms / 1000
    while True:
        for frame in frames:
            if matches(frame):
                return frame
        if time.monotonic() > deadline:
            raise AssertionError(f"No matching frame in {timeout_ms} ms: {frames}")
        page.wait_for_timeout(50)
