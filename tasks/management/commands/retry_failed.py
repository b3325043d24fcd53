"""``manage.py retry_failed [--task PATH]``: queue failed tasks again."""

from django.core.management.base import BaseCommand

from tasks import lifecycle
from tasks.exceptions import EqualJobActive
from tasks.models import TaskRecord


class Command(BaseCommand):
    help = "Put FAILED tasks back in their queue with a fresh attempt budget."

    def add_arguments(self, parser):
        parser.add_argument("--task", help="Only this task path, e.g. app.tasks.func.")

    def handle(self, *args, task, **options):
        records = TaskRecord.objects.failed()
        if task:
            records = records.filter(task_path=task)
        count = 0
        for record in records:
            try:
                count += lifecycle.retry(record)
            except EqualJobActive as refused:
                self.stderr.write(str(refused))
        self.stdout.write(f"Queued {count} failed task(s) again.")
