"""/healthz and /metrics: for load balancers and Prometheus."""

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils.crypto import constant_time_compare
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST

from tasks import health, metrics

# What a load balancer is told to wait before asking again after a 503.
RETRY_AFTER_SECONDS = 5


@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """200 when every dependency answers, else 503 naming the failing ones;
    with each queue's backlog."""
    answer = health.report()
    if answer["ok"]:
        return JsonResponse(answer)
    response = JsonResponse(answer, status=503)
    response["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


@require_GET
def metrics_view(request: HttpRequest) -> HttpResponse:
    """Prometheus' text format; outside DEBUG only with the METRICS_TOKEN."""
    if not settings.DEBUG:
        if not settings.METRICS_TOKEN:
            return HttpResponse(
                "Metrics are off: set METRICS_TOKEN.",
                status=404,
                content_type="text/plain",
            )
        sent = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if not constant_time_compare(sent, settings.METRICS_TOKEN):
            return HttpResponse(
                "Send Authorization: Bearer <METRICS_TOKEN>.",
                status=401,
                content_type="text/plain",
            )
    return HttpResponse(metrics.exposition(), content_type=CONTENT_TYPE_LATEST)
