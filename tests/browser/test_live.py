"""Live state in a real browser (Chromium, Daphne, Redis, runworker): two
dropped uploads followed to their thumbnails, users kept apart, a Daphne
restart that ends in the true state, and the jobs page."""

import base64
import io
import os

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image as PILImage
from playwright.sync_api import expect

from project.redis_server import free_port
from tasks.context import enqueued_by
from tasks.models import TaskRecord
from tests import tasks
from tests.browser.pages import PASSWORD, job_events, sign_in
from tests.support import ROOT, ManagedProcess, start_daphne, wait_for
from thumbnails import services

pytestmark = pytest.mark.django_db(transaction=True)

JOB_TIMEOUT_MS = 60_000
# Screenshots for people to look at (CI keeps the folder).
ARTIFACTS = ROOT / os.environ.get("TEST_ARTIFACTS", "var/test-artifacts")

# After each live:task event is applied, note the value of that task's
# progress bars: which values the page really showed.
RECORD_BARS = """() => {
  window.barsSeen = {};
  document.addEventListener("live:task", (event) => {
    const id = event.detail.id;
    queueMicrotask(() => {
      document.querySelectorAll(`[data-task-id="${id}"] progress`).forEach((bar) => {
        (window.barsSeen[id] ||= []).push(bar.value);
      });
    });
  });
}"""

# Drop files on the upload form's drop zone, as a person dragging them would.
DROP = """(files) => {
  const transfer = new DataTransfer();
  for (const file of files) {
    const bytes = Uint8Array.from(atob(file.data), (c) => c.charCodeAt(0));
    transfer.items.add(new File([bytes], file.name, { type: "image/jpeg" }));
  }
  const zone = document.querySelector(".drop-zone");
  zone.dispatchEvent(new DragEvent("drop", { dataTransfer: transfer, bubbles: true }));
}"""


@pytest.fixture
def alice(django_user_model):
    return django_user_model.objects.create_user("alice", password=PASSWORD)


@pytest.fixture
def bob(django_user_model):
    return django_user_model.objects.create_user("bob", password=PASSWORD)


def photo(name: str, colour: tuple[int, int, int]) -> dict:
    """A 3000x2000 JPEG (a few hundred ms of thumbnails), for DROP."""
    buffer = io.BytesIO()
    gradient = PILImage.linear_gradient("L").resize((3000, 2000))
    layers = [gradient.point(lambda v, c=c: (v + c) % 256) for c in colour]
    PILImage.merge("RGB", layers).save(buffer, "JPEG", quality=90)
    return {"name": name, "data": base64.b64encode(buffer.getvalue()).decode()}


def test_two_dropped_images_show_progress_then_thumbnails_to_their_owner_only(
    browser, page, web_server, worker, alice, bob
):
    # Given bob watching his jobs page in a browser of his own
    bobs_context = browser.new_context()
    bobs_page = bobs_context.new_page()
    bobs_frames = job_events(bobs_page)
    sign_in(bobs_page, web_server, "bob", "/jobs/")
    # and alice on the upload page
    frames = job_events(page)
    sign_in(page, web_server, "alice", "/images/upload/")
    page.evaluate(RECORD_BARS)
    # When she drops two photos on it, and a thumbnailer starts
    page.evaluate(DROP, [photo("red.jpg", (0, 60, 90)), photo("blue.jpg", (90, 0, 60))])
    cards = page.locator("#upload-queue .card")
    expect(cards).to_have_count(2)
    for card in cards.all():
        expect(card.locator('[data-role="status"]')).to_have_text("pending")
    worker("thumbnailer")
    # Then both reach "ready" with no reload, each showing its thumbnail
    for card in cards.all():
        expect(card.locator('[data-role="status"]')).to_have_text(
            "ready", timeout=JOB_TIMEOUT_MS
        )
        thumbnail = card.locator(".card-thumb img")
        expect(thumbnail).to_have_js_property("complete", True)
        assert thumbnail.evaluate("img => img.naturalWidth") > 0
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=ARTIFACTS / "upload-page.png", full_page=True)
    # And both progress bars moved through values between empty and full
    task_ids = [card.get_attribute("data-task-id") for card in cards.all()]
    seen = page.evaluate("() => window.barsSeen")
    for task_id in task_ids:
        assert any(0 < value < 1 for value in seen.get(task_id, [])), seen
    # And the socket told her each image was ready, with its thumbnails
    ready = [f for f in frames if f["type"] == "image.ready"]
    assert sorted(f["task"] for f in ready) == sorted(task_ids)
    assert all(len(f["thumbnails"]) == 6 for f in ready)
    # And bob's browser received none of her events
    assert [f["type"] for f in bobs_frames][:1] == ["snapshot"]
    assert bobs_frames[0]["tasks"] == []
    leaked = [f for f in bobs_frames if f["type"] not in ("snapshot", "ping")]
    assert leaked == []
    bobs_context.close()


@pytest.fixture
def daphne(process_env, process_logs):
    """Daphne on a port of its own that a test can stop and start again."""
    port = free_port()
    env = {**process_env, "PORT": str(port)}
    url = f"http://127.0.0.1:{port}"
    running: list[ManagedProcess] = []

    def start() -> str:
        running.append(start_daphne(env, process_logs))
        return url

    def stop() -> None:
        running.pop().stop()

    start.stop = stop
    yield start
    for process in running:
        process.stop()


def row_status(page, task_id: str):
    return page.locator(f"#job-{task_id} [data-role='status']")


def test_after_daphne_restarts_the_page_shows_the_true_final_state(
    page, daphne, worker, alice, tmp_path
):
    # Given alice's jobs page showing her task running
    url = daphne()
    worker("default")
    sign_in(page, url, "alice", "/jobs/")
    started, done = str(tmp_path / "started"), str(tmp_path / "done")
    with enqueued_by(alice):
        result = tasks.slow_record_run.enqueue(done, "k", 2.0, started)
    expect(row_status(page, result.id)).to_have_text("RUNNING", timeout=JOB_TIMEOUT_MS)
    # When Daphne stops while it runs, and starts again after it finished
    daphne.stop()
    expect(page.locator("#live-status")).to_be_visible()
    wait_for(
        lambda: TaskRecord.objects.get(pk=result.id).status == "SUCCESSFUL",
        timeout=30,
        message="the task to finish while Daphne is down",
    )
    assert row_status(page, result.id).text_content() == "RUNNING"
    daphne()
    # Then, once the page is back on line, it shows the truth within 10 s
    expect(page.locator("#live-status")).to_be_hidden(timeout=30_000)
    expect(row_status(page, result.id)).to_have_text("SUCCESSFUL", timeout=10_000)
    row = page.locator(f"#job-{result.id}")
    expect(row.locator("[data-role='progress']")).to_have_js_property("value", 1)
    expect(row.get_by_role("button", name="Cancel")).to_be_hidden()


def test_the_jobs_page_follows_a_task_and_a_cancel_takes_effect(
    page, web_server, worker, alice, tmp_path
):
    # Given alice's task waiting (no worker yet), listed on her jobs page
    with enqueued_by(alice):
        waiting = tasks.add.enqueue(2, 3)
    sign_in(page, web_server, "alice", "/jobs/")
    expect(row_status(page, waiting.id)).to_have_text("READY")
    # When a worker starts, the row moves to SUCCESSFUL with no reload
    worker("default")
    expect(row_status(page, waiting.id)).to_have_text(
        "SUCCESSFUL", timeout=JOB_TIMEOUT_MS
    )
    # When a long task starts, its row appears live, and she cancels it
    started, done = str(tmp_path / "started"), str(tmp_path / "done")
    with enqueued_by(alice):
        long = tasks.slow_record_run.enqueue(done, "k", 60.0, started)
    expect(row_status(page, long.id)).to_have_text("RUNNING", timeout=JOB_TIMEOUT_MS)
    page.locator(f"#job-{long.id}").get_by_role("button", name="Cancel").click()
    # Then it ends FAILED as cancelled, and can be retried
    expect(page.get_by_text(f"Cancelled slow_record_run ({long.id}).")).to_be_visible()
    expect(row_status(page, long.id)).to_have_text("FAILED")
    row = page.locator(f"#job-{long.id}")
    expect(row.locator("[data-role='error']")).to_contain_text("TaskCancelled")
    expect(row.get_by_role("button", name="Retry")).to_be_visible()
    assert tasks.runs(done) == []
    # And at phone width the page fits the screen, every row still readable
    page.set_viewport_size({"width": 375, "height": 740})
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 375
    expect(row.get_by_role("button", name="Retry")).to_be_in_viewport()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=ARTIFACTS / "jobs-page-phone.png", full_page=True)


def test_the_gallery_shows_an_image_uploaded_elsewhere_live(page, web_server, alice):
    # Given alice's gallery open in one tab, its live socket past the snapshot
    with page.expect_websocket() as opened:
        sign_in(page, web_server, "alice", "/images/")
    opened.value.wait_for_event("framereceived")
    expect(page.locator(".cards-empty")).to_be_visible()
    # When an image of hers arrives from elsewhere (another tab, the API)
    data = base64.b64decode(photo("elsewhere.jpg", (10, 20, 30))["data"])
    image = services.accept_upload(SimpleUploadedFile("elsewhere.jpg", data), alice)
    # Then its card appears at the top of the gallery, with no reload
    card = page.locator(f".cards #image-{image.pk}")
    expect(card).to_be_visible()
    expect(card.locator('[data-role="status"]')).to_have_text("pending")
    expect(page.locator(".cards-empty")).to_be_hidden()
