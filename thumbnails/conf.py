"""The thumbnail settings, as the pipeline's types. Read on each call, so
tests can override settings."""

from django.conf import settings

from thumbnails import pipeline


def specs(names: list[str] | None = None) -> tuple[pipeline.Spec, ...]:
    """Every configured output, or only those of the spec ``names``."""
    selected = tuple(
        pipeline.Spec(entry["name"], entry["size"], fmt, settings.THUMBNAIL_QUALITY)
        for entry in settings.THUMBNAIL_SPECS
        for fmt in entry["formats"]
        if names is None or entry["name"] in names
    )
    return selected


def spec_names() -> list[str]:
    return [entry["name"] for entry in settings.THUMBNAIL_SPECS]


def limits() -> dict:
    """Keyword arguments for pipeline.inspect/render."""
    return {
        "formats": tuple(settings.THUMBNAIL_ALLOWED_FORMATS),
        "max_pixels": settings.THUMBNAIL_MAX_PIXELS,
        "max_bytes": settings.THUMBNAIL_MAX_UPLOAD_BYTES,
    }
