"""``manage.py prune_tasks [--older-than 3d] [--dry-run]``."""

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone
from tqdm import tqdm

from tasks import conf, retention


class Command(BaseCommand):
    help = (
        "Delete finished task records past their retention (TASKS_RESULT_TTL, "
        "TASKS_FAILED_TTL), in small batches, with a progress bar."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--older-than",
            metavar="DURATION",
            help="Delete every finished record that finished longer ago than "
            "this (e.g. 3d, 12h, 30m), SUCCESSFUL and FAILED alike.",
        )
        parser.add_argument(
            "--dry-run", action="store_true", help="Only say how many would go."
        )
        parser.add_argument(
            "--no-pause",
            action="store_true",
            help="Delete batch after batch without the pauses that leave the "
            "database to running workers (for a maintenance window).",
        )

    def handle(self, *args, older_than, dry_run, no_pause, **options):
        try:
            age = conf.parse_duration(older_than) if older_than is not None else None
        except ValueError as error:
            raise CommandError(f"--older-than: {error}") from None
        now = timezone.now()
        total = retention.count_expired(now, age)
        rule = (
            f"finished over {older_than} ago"
            if age is not None
            else f"past retention (successful {_days(conf.get('TASKS_RESULT_TTL'))}, "
            f"failed {_days(conf.get('TASKS_FAILED_TTL'))})"
        )
        if dry_run:
            self.stdout.write(f"Would delete {total} task record(s) {rule}.")
            return
        with tqdm(total=total, unit="record", file=self.stderr) as bar:
            deleted = retention.prune(
                now,
                older_than=age,
                pause=0 if no_pause else retention.PAUSE,
                progress=bar.update,
            )
        self.stdout.write(f"Deleted {deleted} task record(s) {rule}.")


def _days(ttl) -> str:
    seconds = ttl.total_seconds()
    if seconds % 86400 == 0:
        return f"{seconds / 86400:g}d"
    return f"{seconds / 3600:g}h"
