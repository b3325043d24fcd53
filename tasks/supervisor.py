"""``runworker --processes N``: N worker processes, kept running.

The supervisor runs no task itself. It starts N children, each a
tasks.worker.Worker with its slots, each in its own process group (so a
terminal's Ctrl-C reaches a child once, through the supervisor) and killed by
the kernel if the supervisor dies (PR_SET_PDEATHSIG). A child is forked from
the supervisor, which has Django loaded already (a new interpreter costs
~1.5 s of start-up); while the supervisor has any thread besides its main one
(a database pool, the channel layer's loop after it published events), a
fork could copy a lock some other thread holds, so the child is started as a
new process instead (``runworker ... --child ID``).

When a child exits, the records it was running are handed back at once
(READY again, or FAILED at their attempt limit; through a database outage,
as soon as it ends), not after the stale-heartbeat grace, and a new child
starts: at once if the child ended itself to stop a
task (time limit, cancel), else after a backoff that doubles while children
keep dying young.

Signals: the first SIGTERM or SIGINT is passed on (children finish their
running tasks, then exit) and no child is restarted; a second one is passed on
too (children abandon their tasks, which are handed back).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

from django.db import close_old_connections, connections

from tasks import lifecycle, outage
from tasks.worker import STOPPED_TASK_EXIT, Worker, new_worker_id

logger = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1
# A child that dies sooner than this after starting "died young".
MIN_UPTIME = 10.0
RESTART_DELAY = 0.5
RESTART_DELAY_CAP = 30.0


@dataclass
class Child:
    index: int
    worker_id: str
    pid: int
    started_at: float
    young_deaths: int = 0
    popen: subprocess.Popen | None = None  # None: forked

    def exit_code(self) -> int | None:
        """The exit code (negative: killed by that signal), None while it runs."""
        if self.popen is not None:
            return self.popen.poll()
        pid, status = os.waitpid(self.pid, os.WNOHANG)
        return None if pid == 0 else os.waitstatus_to_exitcode(status)

    def signal(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signum)


class Supervisor:
    def __init__(self, queues: list[str], processes: int, concurrency: int) -> None:
        self.queues = list(queues)
        self.processes = processes
        self.concurrency = concurrency
        self._children: dict[int, Child] = {}
        self._restarts: dict[int, tuple[float, int]] = {}  # index: (when, deaths)
        self._exited: list[tuple[Child, int]] = []  # (child, exit code) to hand back
        self._signals = 0
        self._wake = threading.Event()

    def run(self) -> int:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_signal)
        signal.signal(signal.SIGCHLD, lambda *_: self._wake.set())
        logger.info(
            "Supervising %d worker process(es) on %s, %d slot(s) each",
            self.processes,
            ", ".join(self.queues),
            self.concurrency,
        )
        for index in range(self.processes):
            self._start(index)
        while self._busy():
            self._wake.wait(1.0)
            self._wake.clear()
            self._reap()
            self._hand_back_exited()
            self._restart_due()
        logger.info("Supervisor: every worker process has stopped")
        return 0

    def _start(self, index: int, young_deaths: int = 0) -> None:
        worker_id = f"{new_worker_id()}.{index}"
        popen = None
        if threading.active_count() == 1:
            pid = self._fork(worker_id)
        else:
            popen = subprocess.Popen(
                _child_argv(self.queues, self.concurrency, worker_id),
                process_group=0,
                preexec_fn=_die_with_parent,
            )
            pid = popen.pid
        self._children[pid] = Child(
            index, worker_id, pid, time.monotonic(), young_deaths, popen
        )

    def _fork(self, worker_id: str) -> int:
        """Fork a child that runs a Worker and never returns here."""
        connections.close_all()  # no connection shared with the child
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        pid = os.fork()
        if pid:
            return pid
        code = 1
        try:
            os.setpgid(0, 0)
            _die_with_parent()
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
                signal.signal(signum, signal.SIG_DFL)
            random.seed()  # or siblings draw the same retry jitter
            Worker(self.queues, concurrency=self.concurrency, worker_id=worker_id).run()
            code = 0
        except SystemExit as stopped:
            code = stopped.code if isinstance(stopped.code, int) else 1
        except BaseException:
            logger.exception("Worker process %s failed", worker_id)
        finally:
            logging.shutdown()
            os._exit(code)

    def _busy(self) -> bool:
        """Children run, one is to restart, or the records of one that exited
        are still to hand back (not after a second signal: abandon them)."""
        restarting = self._restarts and not self._signals
        handing_back = self._exited and self._signals < 2
        return bool(self._children or restarting or handing_back)

    def _reap(self) -> None:
        for pid, child in list(self._children.items()):
            code = child.exit_code()
            if code is None:
                continue
            del self._children[pid]
            self._exited.append((child, code))
            if not self._signals:
                self._schedule_restart(child, code)

    def _hand_back_exited(self) -> None:
        """Hand back the records of the children that exited, oldest first.
        Through a database outage they wait, and are tried at each wake."""
        while self._exited:
            child, code = self._exited[0]
            reason = f"Worker process {child.worker_id} {_describe_exit(code)}."
            if code == 0:  # it stopped when asked, once its tasks had ended
                logger.info("%s", reason)
                self._exited.pop(0)
                continue
            close_old_connections()
            try:
                count = lifecycle.hand_back_worker(child.worker_id, reason)
            except Exception as error:
                if outage.absorb_database_outage(error):
                    return
                logger.exception("Could not hand back the tasks of %s", child.worker_id)
            else:
                outage.database.answered()
                level = logging.INFO if code == STOPPED_TASK_EXIT else logging.WARNING
                logger.log(level, "%s %d running task(s) handed back.", reason, count)
            self._exited.pop(0)

    def _schedule_restart(self, child: Child, code: int) -> None:
        if code == STOPPED_TASK_EXIT:
            delay, deaths = 0.0, 0
        else:
            young = time.monotonic() - child.started_at < MIN_UPTIME
            deaths = child.young_deaths + 1 if young else 0
            delay = min(RESTART_DELAY * 2 ** max(deaths - 1, 0), RESTART_DELAY_CAP)
            logger.info("Restarting worker process %d in %.1f s", child.index, delay)
        self._restarts[child.index] = (time.monotonic() + delay, deaths)
        if delay == 0:
            self._wake.set()

    def _restart_due(self) -> None:
        if self._signals:
            self._restarts.clear()
            return
        now = time.monotonic()
        for index, (when, deaths) in list(self._restarts.items()):
            if when <= now:
                del self._restarts[index]
                self._start(index, deaths)

    def _on_signal(self, signum: int, frame) -> None:
        self._signals += 1
        what = "finish their tasks" if self._signals == 1 else "abandon their tasks"
        logger.info("%s: worker processes %s", signal.strsignal(signum), what)
        for child in self._children.values():
            child.signal(signal.SIGTERM)
        self._wake.set()


def _child_argv(queues: list[str], concurrency: int, worker_id: str) -> list[str]:
    """How this process was started (manage.py or ``-m django``), as a child."""
    script = sys.argv[0]
    if script.endswith("__main__.py"):
        start = [sys.executable, "-m", "django"]
    else:
        start = [sys.executable, os.path.abspath(script)]
    return [
        *start,
        "runworker",
        *queues,
        "--concurrency",
        str(concurrency),
        "--child",
        worker_id,
    ]


def _describe_exit(code: int) -> str:
    if code == STOPPED_TASK_EXIT:
        return "ended itself to stop a task"
    if code < 0:
        return f"was killed by {signal.Signals(-code).name}"
    return f"exited with code {code}"


def _die_with_parent() -> None:
    """In the child, before exec: be killed when the supervisor dies."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
