"""The jobs page: a signed-in user's recent tasks of both lanes, with their
status, progress, attempts and errors, live (over /ws/jobs/), and cancel and
retry for their own tasks. Plain forms, so it works without JavaScript."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from tasks import lifecycle
from tasks.exceptions import EqualJobActive
from tasks.models import TaskRecord

JOBS_SHOWN = 50


@login_required
@require_GET
def job_list(request: HttpRequest) -> HttpResponse:
    records = TaskRecord.objects.for_owner(request.user)[:JOBS_SHOWN]
    return render(request, "tasks/jobs.html", {"records": records, "shown": JOBS_SHOWN})


@login_required
@require_GET
def job_row(request: HttpRequest, pk: str) -> HttpResponse:
    """One job's row alone: the page inserts it for a job it has not listed."""
    return render(request, "tasks/row.html", {"record": _own(request, pk)})


@login_required
@require_POST
def cancel(request: HttpRequest, pk: str) -> HttpResponse:
    record = _own(request, pk)
    if lifecycle.cancel(record):
        messages.success(request, f"Cancelled {record.task_name} ({record.id}).")
    else:
        messages.error(request, f"{record.task_name} had already finished.")
    return redirect("tasks:jobs")


@login_required
@require_POST
def retry(request: HttpRequest, pk: str) -> HttpResponse:
    record = _own(request, pk)
    try:
        retried = lifecycle.retry(record)
    except EqualJobActive as refused:
        messages.error(request, str(refused))
        return redirect("tasks:jobs")
    if retried:
        messages.success(request, f"{record.task_name} ({record.id}) will run again.")
    else:
        messages.error(request, f"Only a failed job can be retried ({record.status}).")
    return redirect("tasks:jobs")


def _own(request: HttpRequest, pk: str) -> TaskRecord:
    """The user's own record (another user's is a 404, as a missing one)."""
    record = TaskRecord.objects.for_owner(request.user).filter(pk=pk).first()
    if record is None:
        raise Http404("No job of yours has this id.")
    return record
