"""A PostgreSQL server of the test session's (or a benchmark's) own.

It initialises a data directory in a new temporary folder, listens on a free
loopback port (and a unix socket in that folder), and is stopped by its PID.
PostgreSQL refuses to run as root: as root, the server runs as the
``postgres`` user that Debian's package creates, and owns its folder.
"""

from __future__ import annotations

import glob
import logging
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from project.redis_server import terminate

logger = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
DATABASE = "thumbnails"
# For tests only: durability against a crash of the machine traded for
# speed. A crash of the server alone loses nothing (commits still wait for
# their WAL to reach the operating system): the outage tests crash it.
FAST = {"fsync": "off", "full_page_writes": "off"}


class PostgresServerError(RuntimeError):
    """The PostgreSQL server could not be found, started or stopped."""


class PostgresServer:
    def __init__(self, port: int, *, fast: bool = True) -> None:
        self.port = port
        self.settings = {
            "listen_addresses": LOOPBACK,
            "max_connections": "200",
            **(FAST if fast else {}),
        }
        self.root: Path | None = None
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"postgres://postgres@{LOOPBACK}:{self.port}/{DATABASE}"

    def database_settings(self, name: str = DATABASE) -> dict:
        """DATABASES["default"] for this server."""
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": name,
            "USER": "postgres",
            "PASSWORD": "",
            "HOST": LOOPBACK,
            "PORT": str(self.port),
        }

    def start(self, timeout: float = 30.0) -> None:
        """initdb, start, create the database; return once it accepts queries."""
        bin_dir = find_bin_dir()
        self.root = Path(tempfile.mkdtemp(prefix="thumbnails-pg-"))
        user = _server_user()
        if user is not None:
            os.chown(self.root, user.pw_uid, user.pw_gid)
        self._run([bin_dir / "initdb", "-D", self.root / "data", "-U", "postgres",
                   "-A", "trust", "-E", "UTF8", "--no-sync"])  # fmt: skip
        self._launch(timeout)
        self._run([bin_dir / "createdb", "-h", LOOPBACK, "-p", str(self.port),
                   "-U", "postgres", DATABASE])  # fmt: skip
        logger.info("PostgreSQL started (pid %s) at %s", self.process.pid, self.url)

    def crash(self, timeout: float = 15.0) -> None:
        """Stop the server as a crash would: an immediate shutdown (SIGQUIT),
        every connection cut, no checkpoint; ``start_again`` recovers."""
        self._halt(signal.SIGQUIT, timeout)

    def shut_down(self, timeout: float = 15.0) -> None:
        """A fast shutdown (SIGINT): connections are cut, the data kept."""
        self._halt(signal.SIGINT, timeout)

    def start_again(self, timeout: float = 30.0) -> None:
        """Start the stopped server on its data and port."""
        self._launch(timeout)
        logger.info("PostgreSQL started again (pid %s)", self.process.pid)

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM (a smart shutdown), then SIGKILL; remove the folder."""
        if self.process is not None and self.process.poll() is None:
            terminate(self.process, timeout)
            logger.info("PostgreSQL stopped (pid %s)", self.process.pid)
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)

    def _launch(self, timeout: float) -> None:
        options = [arg for key, value in self.settings.items()
                   for arg in ("-c", f"{key}={value}")]  # fmt: skip
        argv = [find_bin_dir() / "postgres", "-D", self.root / "data",
                "-p", str(self.port), "-k", self.root]  # fmt: skip
        with open(self.root / "postgres.log", "ab") as log:
            self.process = subprocess.Popen(
                [*argv, *options],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                **_as(_server_user()),
            )
        self._wait_until_ready(find_bin_dir(), timeout)

    def _halt(self, signum: int, timeout: float) -> None:
        pid = self.process.pid
        os.kill(pid, signum)
        self.process.wait(timeout)
        logger.info(
            "PostgreSQL halted with %s (pid %s)", signal.Signals(signum).name, pid
        )

    def _run(self, argv: list) -> None:
        done = subprocess.run(
            [str(arg) for arg in argv], capture_output=True, text=True,
            **_as(_server_user()),
        )  # fmt: skip
        if done.returncode != 0:
            raise PostgresServerError(f"{argv[0]} failed: {done.stderr.strip()}")

    def _wait_until_ready(self, bin_dir: Path, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        ready = [str(bin_dir / "pg_isready"), "-h", LOOPBACK, "-p", str(self.port)]
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise PostgresServerError(
                    f"postgres exited with code {self.process.returncode}; "
                    f"see {self.root / 'postgres.log'}."
                )
            if subprocess.run(ready, capture_output=True).returncode == 0:
                return
            time.sleep(0.1)
        self.stop()
        raise PostgresServerError(f"postgres did not start within {timeout:.0f} s.")


def find_bin_dir() -> Path:
    """The folder of initdb and postgres: Debian's /usr/lib/postgresql/N/bin
    (the newest), else PATH."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).parent
    raise PostgresServerError(
        "No PostgreSQL server found: `make test-postgres` installs Debian's "
        "postgresql package."
    )


def _server_user() -> pwd.struct_passwd | None:
    """The user to run as: None as anyone but root, else ``postgres``."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam("postgres")
    except KeyError:
        raise PostgresServerError(
            "PostgreSQL does not run as root and there is no postgres user."
        ) from None


def _as(user: pwd.struct_passwd | None) -> dict:
    if user is None:
        return {}
    return {"user": user.pw_uid, "group": user.pw_gid, "cwd": "/tmp"}
