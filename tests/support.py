"""Test helpers: waiting on conditions, real processes from the Procfile."""

from __future__ import annotations

import contextlib
import csv
import io
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import psutil
from honcho.environ import parse_procfile
from PIL import ExifTags, Image

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
CORPUS = ROOT.parent / "shared" / "corpus" / "images"
# Where the project now acts otherwise than the corpus' manifest says (it was
# written when only JPEG, PNG, GIF and WebP were accepted); the corpus itself
# is read-only.
MANIFEST_UPDATES = {"hopper.avif": "thumbnail OK"}


RED, BLUE = (220, 20, 20), (20, 20, 220)


def two_colour(size: tuple[int, int] = (300, 200)) -> Image.Image:
    """Red, with a blue quarter-size rectangle in the top-left corner: which
    way up an image comes out shows."""
    image = Image.new("RGB", size, RED)
    image.paste(BLUE, (0, 0, size[0] // 4, size[1] // 4))
    return image


def encoded(
    image: Image.Image, fmt: str = "PNG", orientation: int = 1, **options
) -> bytes:
    """``image`` saved as ``fmt``, with an EXIF orientation when not 1."""
    if fmt == "HEIF":
        import pillow_heif

        pillow_heif.register_heif_opener()  # the pipeline registers it only when needed
    if orientation != 1:
        exif = Image.Exif()
        exif[ExifTags.Base.Orientation] = orientation
        options["exif"] = exif.tobytes()
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


def decoded(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def near(pixel, colour, tolerance: int = 40) -> bool:
    """Whether two colours are within ``tolerance`` on every channel."""
    return all(abs(a - b) <= tolerance for a, b in zip(pixel, colour, strict=True))


def corpus_manifest() -> list[dict[str, str]]:
    """The corpus' MANIFEST.tsv rows, expected_action as the project now has it
    ([] without the corpus)."""
    manifest = CORPUS / "MANIFEST.tsv"
    if not manifest.exists():
        return []
    with open(manifest, newline="") as rows:
        found = list(csv.DictReader(rows, delimiter="\t"))
    for row in found:
        row["expected_action"] = MANIFEST_UPDATES.get(
            row["file"], row["expected_action"]
        )
    return found


def wait_for[T](
    condition: Callable[[], T],
    *,
    timeout: float = 20.0,
    interval: float = 0.05,
    message: str = "condition",
) -> T:
    """Poll ``condition`` until it returns a truthy value; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(
                f"Timed out after {timeout:.0f} s waiting for {message}."
            )
        time.sleep(interval)


class Repeating:
    """Calls ``func`` every ``interval`` seconds in a thread of its own while
    the ``with`` block runs; then ``finish`` (in that thread, e.g. to close
    its database connection)."""

    def __init__(
        self, func: Callable[[], object], interval: float, finish=None
    ) -> None:
        self._func, self._interval, self._finish = func, interval, finish
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._repeat, daemon=True)

    def __enter__(self) -> Repeating:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _repeat(self) -> None:
        try:
            while not self._stop.wait(self._interval):
                self._func()
        finally:
            if self._finish is not None:
                self._finish()


def wait_finished(result, timeout: float = 30.0):
    """Refresh a TaskResult until it is finished (a real worker runs it)."""

    def finished():
        result.refresh()
        return result.is_finished

    wait_for(finished, timeout=timeout, message=f"task {result.id} to finish")
    return result


async def await_finished(result, timeout: float = 30.0):
    """wait_finished() from async code (in a thread of its own, so that the
    code under test keeps the shared sync thread)."""
    from asgiref.sync import sync_to_async

    return await sync_to_async(wait_finished, thread_sensitive=False)(result, timeout)


def runworker_argv(
    queues: tuple[str, ...] | list[str], concurrency: int = 1, processes: int = 1
) -> list[str]:
    """``manage.py runworker`` on ``queues``, as the tests and benchmarks run it."""
    return [
        str(VENV_BIN / "python"), "manage.py", "runworker", *queues,
        "--concurrency", str(concurrency), "--processes", str(processes),
    ]  # fmt: skip


def celery_worker_argv(concurrency: int = 1, queues: str = "default") -> list[str]:
    """A prefork Celery worker, as in production, quiet on the wire."""
    return [
        str(VENV_BIN / "celery"), "-A", "project", "worker", "--loglevel", "INFO",
        "--concurrency", str(concurrency), "--without-gossip", "--without-mingle",
        "--without-heartbeat", "-Q", queues,
    ]  # fmt: skip


def procfile_command(name: str) -> str:
    """The command line of one Procfile entry: tests run what `make run` runs."""
    procfile = parse_procfile((ROOT / "Procfile").read_text())
    return procfile.processes[name]


class ManagedProcess:
    """A subprocess the test session started, stopped by its PID (and group)."""

    def __init__(self, name: str, argv: list[str] | str, env: dict, log_dir: Path):
        self.name = name
        self.log_path = log_dir / f"{name}-{time.monotonic_ns()}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 (closed in stop())
        shell = isinstance(argv, str)
        self.popen = subprocess.Popen(
            ["/bin/sh", "-c", f"exec {argv}"] if shell else argv,
            cwd=ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def output(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def wait_ready(
        self, text: str, *, timeout: float, message: str, count: int = 1
    ) -> None:
        """Wait until the output shows ``text`` (``count`` times); fail if the
        process dies first."""
        wait_for(
            lambda: self.output().count(text) >= count or not self.alive(),
            timeout=timeout,
            message=message,
        )
        assert self.alive(), self.output()

    def signal(self, signum: int) -> None:
        if self.alive():
            os.kill(self.pid, signum)

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM, wait, then SIGKILL the whole group; return the exit code."""
        if self.alive():
            self.signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout)
        if self.alive():
            os.killpg(self.pid, signal.SIGKILL)
            self.popen.wait(timeout)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGKILL)  # stray children of the group
        self._log.close()
        return self.popen.returncode

    def __repr__(self) -> str:
        return f"<ManagedProcess {self.name} pid={self.pid}>"


def process_ended(pid: int) -> bool:
    """The process is gone, or dead and not yet reaped by its parent."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def http_ok(url: str) -> bool:
    """True once ``url`` answers any HTTP status below 500."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status < 500
    except urllib.error.HTTPError as error:
        return error.code < 500
    except OSError:
        return False


def start_daphne(env: dict, log_dir: Path) -> ManagedProcess:
    """Daphne as the Procfile runs it, on ``env["PORT"]``, once it serves /."""
    process = ManagedProcess("web", procfile_command("web"), env, log_dir)
    url = f"http://127.0.0.1:{env['PORT']}"
    wait_for(
        lambda: http_ok(url + "/") or not process.alive(),
        timeout=30,
        message="daphne to serve /",
    )
    assert process.alive(), process.output()
    return process
