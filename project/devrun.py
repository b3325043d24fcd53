"""The development runner behind ``make run``.

Starts the embedded Redis (unless REDIS_URL is set), then every process of the
Procfile through honcho. SIGINT or SIGTERM stops them all, Redis last, and so
does the death of the parent (``make``), so no process is left behind.
"""

import ctypes
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

logger = logging.getLogger("project.devrun")

BASE_DIR = Path(__file__).resolve().parent.parent
PR_SET_PDEATHSIG = 1


def main() -> int:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
    logging.basicConfig(level=logging.INFO, format="devrun | %(message)s")
    _die_with_parent()
    import django
    from django.conf import settings

    django.setup()
    from project.redis_server import embedded_server

    env = dict(os.environ)
    # Procfile commands (daphne, celery, python) come from this virtualenv.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault(
        "WEBSOCKET_MAX_MESSAGE_BYTES", str(settings.WEBSOCKET_MAX_MESSAGE_BYTES)
    )
    redis = None
    if not os.environ.get("REDIS_URL"):
        redis = embedded_server()
        redis.start()
    port = os.environ.get("PORT", "8000")
    logger.info("Serving http://127.0.0.1:%s/ (Ctrl-C stops everything)", port)
    honcho = subprocess.Popen(
        [sys.executable, "-m", "honcho", "start", "-f", "Procfile", "-p", port],
        cwd=BASE_DIR,
        env=env,
    )
    try:
        return _supervise(honcho)
    finally:
        if redis is not None:
            redis.stop()


def _supervise(honcho: subprocess.Popen) -> int:
    """Wait for honcho; on SIGINT/SIGTERM ask it to stop its processes, then wait."""

    def _forward(signum, frame):
        if honcho.poll() is None:
            honcho.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGINT, _forward)
    signal.signal(signal.SIGTERM, _forward)
    code = honcho.wait()
    logger.info("All processes stopped.")
    return code


def _die_with_parent() -> None:
    """Get SIGTERM when the parent (make) dies, so a killed make leaves no orphans."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


if __name__ == "__main__":
    sys.exit(main())
