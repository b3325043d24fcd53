"""``manage.py runworker QUEUE [QUEUE ...]``: run the job system's worker.

Replaces channels' stock runworker (see tasks.worker for why)."""

import argparse

from django.core.management.base import BaseCommand

from tasks.worker import Worker


def positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a whole number >= 1")
    return number


class Command(BaseCommand):
    help = "Run tasks from the named channel-layer queues (e.g. thumbnailer)."
    worker_class = Worker

    def add_arguments(self, parser):
        parser.add_argument("queues", nargs="+", help="Queue (channel) names to serve.")
        parser.add_argument(
            "--concurrency",
            type=positive_int,
            default=1,
            help="Tasks run at once, and messages held at once (default 1).",
        )

    def handle(self, *args, queues, concurrency, **options):
        self.worker_class(queues, concurrency=concurrency).run()
