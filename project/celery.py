"""The Celery app, wired explicitly: configuration from Django settings
(CELERY_* names), tasks from the modules listed in CELERY_IMPORTS.
Nothing else happens at import time."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")

app = Celery("project")
app.config_from_object("django.conf:settings", namespace="CELERY")
