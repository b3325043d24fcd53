"""``manage.py regenerate_thumbnails [--all | ID ...] [--spec NAME] [--here]``."""

from itertools import batched

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from thumbnails import conf, services
from thumbnails.models import Image
from thumbnails.tasks import make_thumbnails

# Images enqueued per enqueue_many call (one statement each).
CHUNK = 1000


class Command(BaseCommand):
    help = (
        "Make thumbnails again: queue the jobs for the workers (one per image "
        "and spec set; an equal job already waiting is kept), or with --here "
        "make them in this process. Shows a progress bar."
    )

    def add_arguments(self, parser):
        parser.add_argument("ids", nargs="*", type=int, help="Image ids.")
        parser.add_argument("--all", action="store_true", help="Every image.")
        parser.add_argument(
            "--spec",
            action="append",
            dest="specs",
            help="Only this spec (e.g. small); repeatable. Default: all specs.",
        )
        parser.add_argument(
            "--here",
            action="store_true",
            help="Make them here and now instead of queueing jobs.",
        )

    def handle(self, *args, ids, all, specs, here, **options):
        if bool(ids) == bool(all):
            raise CommandError("Give image ids, or --all (not both).")
        unknown = sorted(set(specs or []) - set(conf.spec_names()))
        if unknown:
            raise CommandError(
                f"Unknown spec {', '.join(unknown)}; configured: "
                f"{', '.join(conf.spec_names())}."
            )
        images = Image.objects.order_by("pk")
        if ids:
            images = images.filter(pk__in=ids)
            missing = sorted(set(ids) - set(images.values_list("pk", flat=True)))
            if missing:
                raise CommandError(f"No image with id {', '.join(map(str, missing))}.")
        if here:
            self._make_here(list(images.values_list("pk", flat=True)), specs)
        else:
            self._enqueue(images, specs)

    def _enqueue(self, images, specs) -> None:
        total = images.count()
        with tqdm(total=total, unit="image", file=self.stderr) as bar:
            for chunk in batched(images.select_related("owner").iterator(), CHUNK):
                bar.update(services.enqueue_thumbnails_of(chunk, specs))
        self.stdout.write(f"Queued thumbnails of {total} image(s).")

    def _make_here(self, image_ids: list[int], specs) -> None:
        failed = 0
        for image_id in tqdm(image_ids, unit="image", file=self.stderr):
            try:
                make_thumbnails.call(image_id, specs)
            except Exception as error:
                failed += 1
                self.stderr.write(f"Image {image_id}: {error}")
        total = len(image_ids)
        self.stdout.write(f"Regenerated {total - failed} of {total} image(s).")
        if failed:
            raise CommandError(f"{failed} image(s) failed.")
