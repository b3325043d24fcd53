"""What the JSON API reads and writes.

Uploads are plain files (never DRF's ImageField, which opens them with every
Pillow format): services.accept_upload validates them against the pipeline's
allowlist. Every URL in a response is absolute, so clients can follow it as is.
"""

from __future__ import annotations

from typing import Any

from django.core.validators import URLValidator
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.reverse import reverse

from tasks.models import Status, TaskRecord, error_reason
from thumbnails import conf, file_urls, pipeline, webhooks
from thumbnails.models import Image, Thumbnail


@extend_schema_field(OpenApiTypes.BINARY)
class UploadFileField(serializers.FileField):
    """A FileField documented as the binary part of a multipart body (DRF's
    own maps to a URI string, which describes a response, not an upload)."""


class HttpURLField(serializers.URLField):
    """A URL the webhook job can call: http or https, never ftp or file."""

    default_error_messages = {"invalid": "Enter a valid http(s) URL."}

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        message = self.error_messages["invalid"]
        self.validators = [
            *(v for v in self.validators if not isinstance(v, URLValidator)),
            URLValidator(schemes=["http", "https"], message=message),
        ]


class ImageUploadSerializer(serializers.Serializer):
    """The multipart body of POST /api/images/."""

    file = UploadFileField(
        help_text="The image, in an accepted format (by default JPEG, PNG, GIF, "
        "WebP, HEIC/HEIF, AVIF).",
        error_messages={
            "required": "No file was submitted: send the image as the multipart "
            "form field 'file'.",
            "empty": "The submitted file is empty.",
        },
    )
    webhook_url = HttpURLField(
        required=False,
        allow_blank=True,
        max_length=500,
        help_text="Called (signed POST) when the thumbnails are ready or failed.",
    )

    def validate_webhook_url(self, url: str) -> str:
        if url:
            try:
                webhooks.check_address(url)
            except webhooks.ForbiddenWebhookAddress as error:
                raise serializers.ValidationError(str(error)) from error
        return url


class UploadErrorSerializer(serializers.Serializer):
    """A refused upload: one message per field, plus a machine-readable code
    for files the pipeline refused (for the schema only)."""

    file = serializers.ListField(child=serializers.CharField(), required=False)
    webhook_url = serializers.ListField(child=serializers.CharField(), required=False)
    code = serializers.ChoiceField(
        choices=[
            pipeline.UnsupportedFormat.code,
            pipeline.CorruptImage.code,
            pipeline.DecompressionBomb.code,
            pipeline.FileTooLarge.code,
            pipeline.ImageRejected.code,
        ],
        required=False,
    )


def rejection(error: pipeline.ImageRejected) -> dict[str, Any]:
    """The body for an upload the pipeline refused."""
    return {"file": [error.message], "code": error.code}


class ThumbnailSerializer(serializers.ModelSerializer):
    url = serializers.SerializerMethodField()

    class Meta:
        model = Thumbnail
        fields = ["spec", "format", "width", "height", "byte_size", "url"]
        read_only_fields = fields

    @extend_schema_field(OpenApiTypes.URI)
    def get_url(self, thumbnail: Thumbnail) -> str:
        """Signed: works with no credentials until it expires (thumbnails.file_urls)."""
        return _absolute(self.context.get("request"), file_urls.of_thumbnail(thumbnail))


class ImageSerializer(serializers.ModelSerializer):
    url = serializers.HyperlinkedIdentityField(view_name="api:image-detail")
    original_url = serializers.SerializerMethodField()
    placeholder = serializers.CharField(
        read_only=True,
        help_text="A tiny preview made at upload: a data: URI of a ~24 px WebP.",
    )
    color = serializers.CharField(
        read_only=True, help_text="The image's dominant colour, #rrggbb."
    )
    task_url = serializers.SerializerMethodField()
    webhook_url = serializers.SerializerMethodField()
    thumbnails = ThumbnailSerializer(many=True, read_only=True)

    class Meta:
        model = Image
        fields = [
            "id",
            "url",
            "status",
            "error",
            "original_name",
            "format",
            "width",
            "height",
            "byte_size",
            "original_url",
            "placeholder",
            "color",
            "webhook_url",
            "created_at",
            "task_id",
            "task_url",
            "thumbnails",
        ]
        read_only_fields = fields

    @extend_schema_field(OpenApiTypes.URI)
    def get_original_url(self, image: Image) -> str:
        """Signed, as the thumbnails' URLs are."""
        return _absolute(self.context.get("request"), file_urls.of_original(image))

    @extend_schema_field(serializers.URLField(allow_null=True))
    def get_webhook_url(self, image: Image) -> str | None:
        """null, not "", when there is none: "" is not a URL."""
        return image.webhook_url or None

    @extend_schema_field(serializers.URLField(allow_null=True))
    def get_task_url(self, image: Image) -> str | None:
        if not image.task_id:
            return None
        request = self.context.get("request")
        return reverse("api:task-detail", args=[image.task_id], request=request)


class RegenerateSerializer(serializers.Serializer):
    """The optional JSON body of POST /api/images/{id}/regenerate/."""

    specs = serializers.ListField(
        child=serializers.ChoiceField(choices=[]),
        required=False,
        allow_empty=False,
        help_text="Only these thumbnail specs; all of them when omitted.",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Choices are read per request: the specs are settings.
        super().__init__(*args, **kwargs)
        names = conf.spec_names()
        child = self.fields["specs"].child
        child.choices = names
        child.error_messages["invalid_choice"] = (
            f'Unknown spec "{{input}}". Known specs: {", ".join(names)}.'
        )


class TaskSerializer(serializers.ModelSerializer):
    """A job as its owner sees it: state and reasons, never tracebacks."""

    task = serializers.CharField(source="task_path", read_only=True)
    queue = serializers.CharField(source="queue_name", read_only=True)
    errors = serializers.SerializerMethodField()
    return_value = serializers.SerializerMethodField()

    class Meta:
        model = TaskRecord
        fields = [
            "id",
            "task",
            "queue",
            "status",
            "progress",
            "progress_message",
            "attempts",
            "errors",
            "enqueued_at",
            "started_at",
            "finished_at",
            "return_value",
        ]
        read_only_fields = fields

    def get_errors(self, record: TaskRecord) -> list[str]:
        """One reason per failed attempt: the last line of its traceback."""
        return [error_reason(error) for error in record.errors]

    @extend_schema_field(serializers.JSONField(allow_null=True))
    def get_return_value(self, record: TaskRecord) -> Any:
        return record.return_value if record.status == Status.SUCCESSFUL else None


def _absolute(request, url: str) -> str:
    return request.build_absolute_uri(url) if request is not None else url
