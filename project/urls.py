"""URL wiring: each app owns its own urls; this module only includes them."""

from django.contrib import admin
from django.urls import include, path

from project import views
from tasks import views as task_views
from thumbnails import media

urlpatterns = [
    path("", views.home, name="home"),
    path("accounts/", include("django.contrib.auth.urls")),
    path("admin/", admin.site.urls),
    path("healthz", task_views.healthz, name="healthz"),
    path("metrics", task_views.metrics_view, name="metrics"),
    path("api/", include("thumbnails.api_urls")),
    path("media/<path:path>", media.serve, name="media"),
    path("", include("tasks.urls")),
    path("", include("thumbnails.urls")),
]
