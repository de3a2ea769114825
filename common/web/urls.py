"""The URL layout and the health check every service shares."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib import admin
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from common.messaging.broker import broker_connection
from common.web.views import FlowView


def healthz(request: HttpRequest) -> JsonResponse:
    """Liveness: 200 when the database and the broker answer, else 503 naming what is down."""
    checks: dict[str, str] = {}
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        checks["database"] = "ok"
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        checks["database"] = f"down: {exc}".strip()
    try:
        with broker_connection() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
        checks["broker"] = "ok"
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        checks["broker"] = f"down: {exc}".strip()
    healthy = all(value == "ok" for value in checks.values())
    body = {"status": "ok" if healthy else "unavailable", "service": settings.SERVICE_NAME, **checks}
    return JsonResponse(body, status=200 if healthy else 503)


def service_urlpatterns(api_urls: str) -> list[Any]:
    """The URL layout every service shares; ``api_urls`` is its domain app's urls module."""
    return [
        path("healthz", healthz, name="healthz"),
        path("", include("django_prometheus.urls")),
        path("admin/", admin.site.urls),
        path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
        path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
        path("api/flow/", FlowView.as_view(), name="flow"),
        path("api/", include(api_urls)),
    ]
