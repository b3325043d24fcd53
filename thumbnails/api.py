"""The JSON API: a user's images (upload, list, look, delete, regenerate) and
the jobs that make their thumbnails.

Every queryset is filtered by owner, so another user's image or task is a 404
(never a 403 that would confirm it exists). Creating and deleting go through
thumbnails.services, the one way in for pages, API and admin alike.
"""

from __future__ import annotations

from django.db import transaction
from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.parsers import JSONParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import BaseThrottle, UserRateThrottle

from tasks import lifecycle
from tasks.models import TaskRecord
from thumbnails import pipeline, services
from thumbnails.models import Image
from thumbnails.serializers import (
    ImageSerializer,
    ImageUploadSerializer,
    RegenerateSerializer,
    TaskSerializer,
    UploadErrorSerializer,
    rejection,
)

ACCEPTED = "Accepted: the thumbnails are being made; follow `task_url`."


class UploadRateThrottle(UserRateThrottle):
    """Uploads per user (rate: DEFAULT_THROTTLE_RATES["uploads"]); reads are
    not throttled, uploads cost storage and worker time."""

    scope = "uploads"


@extend_schema_view(
    list=extend_schema(summary="Your images, newest first"),
    retrieve=extend_schema(summary="One of your images, with its thumbnails"),
    destroy=extend_schema(
        summary="Delete an image; its files are removed in the background"
    ),
)
class ImageViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    serializer_class = ImageSerializer
    # Uploads are multipart only; regenerate overrides this with JSON.
    parser_classes = [MultiPartParser]

    def get_queryset(self) -> QuerySet[Image]:
        if getattr(self, "swagger_fake_view", False):  # schema generation
            return Image.objects.none()
        return Image.objects.owned_by(self.request.user).prefetch_related("thumbnails")

    def get_throttles(self) -> list[BaseThrottle]:
        if self.action == "create":
            return [UploadRateThrottle()]
        return super().get_throttles()

    @extend_schema(
        summary="Upload an image",
        request={"multipart/form-data": ImageUploadSerializer},
        responses={
            202: OpenApiResponse(ImageSerializer, description=ACCEPTED),
            400: OpenApiResponse(UploadErrorSerializer, description="Refused."),
            413: OpenApiResponse(UploadErrorSerializer, description="Too large."),
        },
    )
    def create(self, request: Request) -> Response:
        body = ImageUploadSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            image = services.accept_upload(
                body.validated_data["file"],
                request.user,
                webhook_url=body.validated_data.get("webhook_url", ""),
            )
        except pipeline.ImageRejected as error:
            return Response(rejection(error), status=_rejection_status(error))
        return self._accepted(image)

    def retrieve(self, request: Request, *args, **kwargs) -> Response:
        # The task may have failed without the task body saying so.
        image = services.sync_status(self.get_object())
        return Response(self.get_serializer(image).data)

    def perform_destroy(self, instance: Image) -> None:
        services.delete_image(instance)

    @extend_schema(
        summary="Make the thumbnails again (all, or only some specs)",
        request=RegenerateSerializer,
        responses={
            202: OpenApiResponse(ImageSerializer, description=ACCEPTED),
            400: OpenApiResponse(description="Unknown spec names."),
        },
    )
    @action(detail=True, methods=["post"], parser_classes=[JSONParser])
    def regenerate(self, request: Request, pk: str | None = None) -> Response:
        image = self.get_object()
        body = RegenerateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        with transaction.atomic():
            services.enqueue_thumbnails(image, body.validated_data.get("specs"))
        return self._accepted(image)

    def _accepted(self, image: Image) -> Response:
        data = self.get_serializer(image).data
        return Response(data, status=status.HTTP_202_ACCEPTED, headers=_location(data))


@extend_schema_view(retrieve=extend_schema(summary="One of your jobs"))
class TaskViewSet(mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    serializer_class = TaskSerializer

    def get_queryset(self) -> QuerySet[TaskRecord]:
        if getattr(self, "swagger_fake_view", False):  # schema generation
            return TaskRecord.objects.none()
        user = self.request.user
        if self.action == "cancel" and user.is_staff:
            return TaskRecord.objects.all()  # staff may stop anyone's job
        return TaskRecord.objects.for_owner(user)

    @extend_schema(
        summary="Cancel one of your jobs, waiting or running",
        request=None,
        responses={
            200: OpenApiResponse(TaskSerializer, description="Cancelled."),
            409: OpenApiResponse(description="Already finished: nothing to cancel."),
        },
    )
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: str | None = None) -> Response:
        """A running job stops within about a second; it is never retried."""
        record = self.get_object()
        if not lifecycle.cancel(record):
            record.refresh_from_db()
            detail = (
                f"The job has already finished ({record.status}): nothing to cancel."
            )
            return Response({"detail": detail}, status=status.HTTP_409_CONFLICT)
        return Response(self.get_serializer(record).data)


def _rejection_status(error: pipeline.ImageRejected) -> int:
    if isinstance(error, pipeline.FileTooLarge):
        return status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    return status.HTTP_400_BAD_REQUEST


def _location(data: dict) -> dict[str, str]:
    return {"Location": data["url"]}
