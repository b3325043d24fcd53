"""``{{ thumbnail|file_url }}``, ``{{ image|original_url }}``: signed file URLs
in templates (thumbnails.file_urls)."""

from django import template

from thumbnails import file_urls

register = template.Library()


@register.filter
def file_url(thumbnail) -> str:
    return file_urls.of_thumbnail(thumbnail)


@register.filter
def original_url(image) -> str:
    return file_urls.of_original(image)
