"""The welcome page."""

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render


def home(request: HttpRequest) -> HttpResponse:
    """A short welcome with links; the page the seed's console snippet runs in."""
    return render(request, "home.html")
