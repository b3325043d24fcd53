"""The upload form: one or many files, each validated by the pipeline later
(never by Django's ImageField, which opens files with every Pillow format)."""

from django import forms
from django.conf import settings
from django.core.exceptions import ValidationError

# Pillow's format name -> (the name people know, the media type).
FORMATS = {
    "JPEG": ("JPEG", "image/jpeg"),
    "PNG": ("PNG", "image/png"),
    "GIF": ("GIF", "image/gif"),
    "WEBP": ("WebP", "image/webp"),
    # Browsers on most systems do not know HEIC's type: the extensions too.
    "HEIF": ("HEIC/HEIF", "image/heic,image/heif,.heic,.heif"),
    "AVIF": ("AVIF", "image/avif"),
}


class MultipleFileInput(forms.ClearableFileInput):
    allow_multiple_selected = True


class MultipleFileField(forms.FileField):
    """The selected files as a list; their content is checked per file."""

    widget = MultipleFileInput

    def clean(self, data, initial=None):
        files = [upload for upload in data or [] if upload]
        if self.required and not files:
            raise ValidationError(self.error_messages["required"], code="required")
        return files


class UploadForm(forms.Form):
    images = MultipleFileField(
        label="Images",
        error_messages={"required": "Choose at least one image to upload."},
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        accepted = [
            FORMATS.get(name, (name, "")) for name in settings.THUMBNAIL_ALLOWED_FORMATS
        ]
        field = self.fields["images"]
        field.widget.attrs["accept"] = ",".join(kind for _, kind in accepted if kind)
        field.help_text = "Accepted formats: " + ", ".join(n for n, _ in accepted)
