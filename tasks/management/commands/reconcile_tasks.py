"""``manage.py reconcile_tasks [--loop]``: re-send lost work, recover dead workers."""

from django.core.management.base import BaseCommand, CommandError

from tasks import conf
from tasks.reconciler import Reconciler


class Command(BaseCommand):
    help = (
        "Re-send READY tasks whose message was lost and recover tasks of dead workers."
    )

    def add_arguments(self, parser):
        parser.add_argument("--loop", action="store_true", help="Keep sweeping.")
        parser.add_argument(
            "--interval",
            type=float,
            default=conf.get("TASKS_RECONCILE_INTERVAL_SECONDS"),
            help="Seconds between sweeps with --loop.",
        )

    def handle(self, *args, loop, interval, **options):
        reconciler = Reconciler()
        if loop:
            try:
                reconciler.loop(interval)
            except KeyboardInterrupt:
                return
        report = reconciler.sweep()
        if report.unavailable:
            raise CommandError(
                f"{report.unavailable} unavailable: nothing done (the cause is "
                "logged above)."
            )
        self.stdout.write(
            "Another reconciler is sweeping; nothing done."
            if report.skipped
            else f"Re-sent {report.resent}, requeued {report.requeued}, "
            f"failed {report.failed}."
        )
