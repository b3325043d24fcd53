"""Images in the admin: a preview, the status, and "Generate thumbnails"."""

from django.contrib import admin, messages
from django.utils.html import format_html
from django.utils.translation import ngettext

from thumbnails import services
from thumbnails.models import Image, Thumbnail


class ThumbnailInline(admin.TabularInline):
    model = Thumbnail
    extra = 0
    can_delete = False
    readonly_fields = ("spec", "format", "width", "height", "byte_size", "file")

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Image)
class ImageAdmin(admin.ModelAdmin):
    list_display = (
        "preview",
        "original_name",
        "owner",
        "status",
        "format",
        "dimensions",
        "created_at",
    )
    list_display_links = ("preview", "original_name")
    list_filter = ("status", "format")
    search_fields = ("original_name", "sha256", "owner__username")
    list_select_related = ("owner",)
    readonly_fields = (
        "owner",
        "original",
        "original_name",
        "sha256",
        "format",
        "width",
        "height",
        "byte_size",
        "status",
        "error",
        "task_id",
        "webhook_url",
        "created_at",
        "updated_at",
    )
    inlines = (ThumbnailInline,)
    actions = ("generate_thumbnails",)

    def has_add_permission(self, request):
        # Uploads go through the upload page or the API, which validate the
        # file against the format allowlist; the admin never stores raw files.
        return False

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("thumbnails")

    @admin.display(description="Preview")
    def preview(self, image: Image) -> str:
        small = next(
            (
                t
                for t in image.thumbnails.all()
                if t.spec == "small" and t.format == "JPEG"
            ),
            None,
        )
        if small is None:
            return "-"
        return format_html(
            '<img src="{}" width="{}" height="{}" alt="" style="{}">',
            small.file.url,
            small.width,
            small.height,
            "max-height:80px;width:auto",
        )

    @admin.display(description="Size")
    def dimensions(self, image: Image) -> str:
        return f"{image.width}x{image.height}"

    def delete_model(self, request, obj):
        services.delete_image(obj)  # files go through the guaranteed job

    def delete_queryset(self, request, queryset):
        for image in queryset:
            services.delete_image(image)

    @admin.action(description="Generate thumbnails", permissions=["change"])
    def generate_thumbnails(self, request, queryset):
        # One job per image and spec set (a double click joins the first).
        count = services.enqueue_thumbnails_of(queryset.select_related("owner"))
        self.message_user(
            request,
            ngettext(
                "Thumbnails of %d image were queued.",
                "Thumbnails of %d images were queued.",
                count,
            )
            % count,
            messages.SUCCESS,
        )
