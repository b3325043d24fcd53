"""Inspect and steer task records in the admin."""

import json

from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.db.models import Exists, OuterRef
from django.urls import reverse
from django.utils.html import format_html
from django.utils.translation import ngettext

from tasks import lifecycle, schedules
from tasks.exceptions import EqualJobActive
from tasks.models import ScheduleState, Status, TaskRecord


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
    # The owner by the user model's own name field (not every model has
    # ``username``).
    search_fields = ("id", "task_path", f"owner__{get_user_model().USERNAME_FIELD}")
    date_hierarchy = "enqueued_at"
    list_select_related = ("owner",)
    actions = ("retry_selected", "cancel_selected")
    readonly_fields = [f.name for f in TaskRecord._meta.fields]

    def has_add_permission(self, request):
        return False  # records are made by enqueue(), never by hand

    @admin.action(description="Retry selected failed tasks", permissions=["change"])
    def retry_selected(self, request, queryset):
        count = 0
        for record in queryset.failed():
            try:
                count += lifecycle.retry(record)
            except EqualJobActive as refused:
                self.message_user(request, str(refused), messages.WARNING)
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


@admin.register(ScheduleState)
class ScheduleStateAdmin(admin.ModelAdmin):
    """TASKS_SCHEDULE as beat sees it: one row per entry it has met (read-only;
    settings are the place to change a schedule)."""

    list_display = (
        "name",
        "task",
        "schedule",
        "last_run_at",
        "next_run_at",
        "last_task",
        "last_error",
        "in_settings",
    )
    readonly_fields = ("name", "task", "schedule", *list_display[3:-1], "definition")

    def get_queryset(self, request):
        records = TaskRecord.objects.filter(pk=OuterRef("last_task_id"))
        return super().get_queryset(request).annotate(has_last_task=Exists(records))

    def changelist_view(self, request, extra_context=None):
        """Say which entries of settings have no row yet (beat has not met them)."""
        seen = set(ScheduleState.objects.values_list("name", flat=True))
        unseen = [s.name for s in schedules.configured() if s.name not in seen]
        if unseen:
            self.message_user(
                request,
                f"Not yet seen by beat: {', '.join(unseen)}. Each gets a row at "
                "the next check and first runs at its next tick after that.",
                messages.INFO,
            )
        return super().changelist_view(request, extra_context)

    @admin.display(description="task")
    def task(self, state: ScheduleState) -> str:
        return _definition(state).get("task", "")

    @admin.display(description="schedule")
    def schedule(self, state: ScheduleState) -> str:
        return schedules.describe(_definition(state))

    @admin.display(description="last task")
    def last_task(self, state: ScheduleState) -> str:
        """A link to the record, while retention has not deleted it."""
        if not getattr(state, "has_last_task", False):
            return state.last_task_id or "-"
        url = reverse("admin:tasks_taskrecord_change", args=[state.last_task_id])
        return format_html('<a href="{}">{}</a>', url, state.last_task_id)

    @admin.display(description="in settings", boolean=True)
    def in_settings(self, state: ScheduleState) -> bool:
        return state.name in {s.name for s in schedules.configured()}

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


def _definition(state: ScheduleState) -> dict:
    return json.loads(state.definition)
