"""Pages for people: upload images, list them, look at one."""

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse


@login_required
def image_list(request: HttpRequest) -> HttpResponse:
    raise NotImplementedError


@login_required
def upload(request: HttpRequest) -> HttpResponse:
    raise NotImplementedError


@login_required
def image_detail(request: HttpRequest, pk: int) -> HttpResponse:
    raise NotImplementedError
