"""The jobs page (tasks.pages)."""

from django.urls import path

from tasks import pages

app_name = "tasks"

urlpatterns = [
    path("jobs/", pages.job_list, name="jobs"),
    path("jobs/<str:pk>/row/", pages.job_row, name="row"),
    path("jobs/<str:pk>/cancel/", pages.cancel, name="cancel"),
    path("jobs/<str:pk>/retry/", pages.retry, name="retry"),
]
