"""The project package. Loading the Celery app here makes ``@shared_task``
bind to it in every process (web, workers, tests), as Celery's Django guide does."""

from project.celery import app as celery_app

__all__ = ("celery_app",)
