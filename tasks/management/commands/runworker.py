"""``manage.py runworker QUEUE [QUEUE ...]``: run the job system's workers.

Replaces channels' stock runworker (tasks.worker says why): a supervisor with
``--processes`` worker processes of ``--concurrency`` slots each."""

import argparse
import os

from django.core.management.base import BaseCommand

from tasks.supervisor import Supervisor
from tasks.worker import Worker


def positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number >= 1")
    return number


def process_count(value: str) -> int:
    """A whole number >= 1, or ``auto``: one process per CPU."""
    if value == "auto":
        return os.cpu_count() or 1
    return positive_int(value)


class Command(BaseCommand):
    help = "Run tasks from the named channel-layer queues (e.g. thumbnailer)."
    worker_class = Worker

    def add_arguments(self, parser):
        parser.add_argument("queues", nargs="+", help="Queue (channel) names to serve.")
        parser.add_argument(
            "--processes",
            type=process_count,
            default=1,
            help="Worker processes, or 'auto' for one per CPU (default 1).",
        )
        parser.add_argument(
            "--concurrency",
            type=positive_int,
            default=1,
            help="Slots per process: tasks each runs at once (default 1).",
        )
        # Set by the supervisor for its children: run one worker, this id.
        parser.add_argument("--child", metavar="WORKER_ID", help=argparse.SUPPRESS)

    def handle(self, *args, queues, processes, concurrency, child, **options):
        if child:
            self.worker_class(queues, concurrency=concurrency, worker_id=child).run()
            return
        Supervisor(queues, processes=processes, concurrency=concurrency).run()
