"""``manage.py regenerate_thumbnails [--all | ID ...] [--spec NAME]``."""

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from thumbnails import conf
from thumbnails.models import Image
from thumbnails.tasks import make_thumbnails


class Command(BaseCommand):
    help = "Make thumbnails again, here and now, with a progress bar."

    def add_arguments(self, parser):
        parser.add_argument("ids", nargs="*", type=int, help="Image ids.")
        parser.add_argument("--all", action="store_true", help="Every image.")
        parser.add_argument(
            "--spec",
            action="append",
            dest="specs",
            help="Only this spec (e.g. small); repeatable. Default: all specs.",
        )

    def handle(self, *args, ids, all, specs, **options):
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
        failed = 0
        for image_id in tqdm(
            list(images.values_list("pk", flat=True)), unit="image", file=self.stderr
        ):
            try:
                make_thumbnails.call(image_id, specs)
            except Exception as error:
                failed += 1
                self.stderr.write(f"Image {image_id}: {error}")
        total = images.count()
        self.stdout.write(f"Regenerated {total - failed} of {total} image(s).")
        if failed:
            raise CommandError(f"{failed} image(s) failed.")
