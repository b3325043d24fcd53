from django.apps import AppConfig


class ThumbnailsConfig(AppConfig):
    name = "thumbnails"
    verbose_name = "Thumbnails"

    def ready(self) -> None:
        from tasks.retention import records_pruned
        from thumbnails import services

        records_pruned.connect(services.forget_pruned_tasks)
