"""The JSON API under /api/: images, tasks, the OpenAPI schema and its docs
(Swagger UI and ReDoc, both served from our own static files)."""

from django.urls import path
from drf_spectacular.views import (
    SpectacularAPIView,
    SpectacularRedocView,
    SpectacularSwaggerView,
)
from rest_framework.routers import SimpleRouter

from thumbnails import api

app_name = "api"

router = SimpleRouter()
router.register("images", api.ImageViewSet, basename="image")
router.register("tasks", api.TaskViewSet, basename="task")

urlpatterns = [
    *router.urls,
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="api:schema"), name="docs"),
    path(
        "redoc/",
        SpectacularRedocView.as_view(
            url_name="api:schema", template_name="api/redoc.html"
        ),
        name="redoc",
    ),
]
