"""``{{ thumbnail|file_url }}``, ``{{ image|original_url }}``: signed file URLs
in templates (thumbnails.file_urls)."""

from django import template

from thumbnails import file_urls

register = template.Library()


@register.filter
def file_url(thumbnail) -> str:
    return file_urls.url(thumbnail.file.name, thumbnail.image_id)


@register.filter
def original_url(image) -> str:
    return file_urls.url(image.original.name, image.pk)
