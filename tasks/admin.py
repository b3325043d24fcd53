"""Inspect and steer task records in the admin."""

from django.contrib import admin, messages
from django.utils.translation import ngettext

from tasks import lifecycle
from tasks.models import Status, TaskRecord


@admin.register(TaskRecord)
class TaskRecordAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "task_name",
        "status",
        "queue_name",
        "backend",
        "attempts",
        "progress",
        "owner",
        "enqueued_at",
        "finished_at",
    )
    list_filter = ("status", "queue_name", "backend", "task_path")
    search_fields = ("id", "task_path", "owner__username")
    date_hierarchy = "enqueued_at"
    list_select_related = ("owner",)
    actions = ("retry_selected", "cancel_selected")
    readonly_fields = [f.name for f in TaskRecord._meta.fields]

    def has_add_permission(self, request):
        return False  # records are made by enqueue(), never by hand

    @admin.action(description="Retry selected failed tasks", permissions=["change"])
    def retry_selected(self, request, queryset):
        count = sum(lifecycle.retry(record) for record in queryset.failed())
        message = ngettext(
            "%d task was queued again.", "%d tasks were queued again.", count
        )
        self._report(request, message % count, count)

    @admin.action(
        description="Cancel selected waiting or running tasks", permissions=["change"]
    )
    def cancel_selected(self, request, queryset):
        active = queryset.filter(status__in=(Status.READY, Status.RUNNING))
        count = sum(lifecycle.cancel(record) for record in active)
        message = ngettext("%d task was cancelled.", "%d tasks were cancelled.", count)
        self._report(request, message % count, count)

    def _report(self, request, message: str, count: int) -> None:
        level = messages.SUCCESS if count else messages.WARNING
        self.message_user(request, message, level)
