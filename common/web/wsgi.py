"""A lean path in front of Django for a service's hottest requests, and Django for the rest.

The order POST starts every saga, and under load most of the web process's CPU went to
what that one request does not need: eleven middlewares (sessions, CSRF, messages,
authentication for the admin, static files …), URL resolving, DRF's negotiation, request
and response objects (py-spy, `make bench`; docs/performance.md). A client's cancel of an
order cost the same, about three times a lean POST. ``LeanRoutes`` answers chosen
``(method, path)`` pairs (a path may have one argument, such as the order's id) with a plain
function and gives every other request to Django unchanged.

A lean handler answers only what it is sure of; for anything else it returns None and the
request goes to Django as if the lean path did not exist (its body is handed on intact),
which then words every error (401, 400, 406, 409, 413 …) as it always has. So a handler
takes the common case — a plainly valid body, the right token — and nothing else. Around
it this module keeps what the middlewares would have done for that request:

- Django's ``request_started``/``request_finished`` signals (the database connection's
  age and health checks, and with DEBUG the query log, as for any request);
- the security headers Django's middlewares add to every API answer;
- django-prometheus' request and response metrics, labelled as its middleware labels them;
- a database that is away answers the same 503 with ``Retry-After``
  (common.web.api.unavailable), and an unexpected error a JSON 500 logged as Django logs it.

When traces are exported the lean path steps aside: the Django instrumentation starts an
order's trace at its request. ``SAGA_LEAN_ROUTES=0`` turns it off.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from django.conf import settings
from django.core import signals
from django.db import InterfaceError, OperationalError
from django.urls import reverse
from django_prometheus.middleware import Metrics

from common.observability.tracing import tracing_enabled
from common.web.api import handler500, unavailable

log = logging.getLogger("django.request")  # where Django logs an unhandled error

# What a lean handler answers: (status, body) with a JSON body; None: "Django, please".
Answer = tuple[int, bytes] | None
Handler = Callable[["LeanRequest"], Answer]


def security_headers() -> tuple[tuple[str, str], ...]:
    """What SecurityMiddleware and XFrameOptionsMiddleware add to an API answer over plain
    HTTP, from the same settings (tests/order/test_lean_post.py holds the two paths'
    headers equal). HTTPS redirects and HSTS are not repeated here: with those settings
    on, the lean path steps aside (``LeanRoutes.enabled``)."""
    referrer = settings.SECURE_REFERRER_POLICY
    headers = [
        ("X-Frame-Options", settings.X_FRAME_OPTIONS),
        ("X-Content-Type-Options", "nosniff") if settings.SECURE_CONTENT_TYPE_NOSNIFF else None,
        ("Referrer-Policy", referrer if isinstance(referrer, str) else ",".join(referrer))
        if referrer
        else None,
        ("Cross-Origin-Opener-Policy", settings.SECURE_CROSS_ORIGIN_OPENER_POLICY)
        if settings.SECURE_CROSS_ORIGIN_OPENER_POLICY
        else None,
    ]
    return tuple(header for header in headers if header is not None)


JSON_TYPES = frozenset(
    {"application/json", "application/json; charset=utf-8", "application/json;charset=utf-8"}
)
ANY_JSON_ACCEPT = frozenset({"", "*/*", "application/json"})


@dataclass(frozen=True)
class LeanRequest:
    """What a lean handler may read: the WSGI environ, the body (already read) and the
    path's one argument, for a route that has one (``LeanRoute.argument``)."""

    environ: dict[str, Any]
    body: bytes
    argument: str = ""

    def header(self, name: str) -> str | None:
        """A request header by its HTTP name (``Idempotency-Key``), or None."""
        return self.environ.get("HTTP_" + name.upper().replace("-", "_"))


@dataclass(frozen=True)
class LeanRoute:
    method: str
    url_name: str  # the Django URL it stands in for: its path, and the metrics' view label
    handler: Handler
    allow: str  # the Allow header Django's view answers with
    # The URL's one argument (``pk`` of ``/api/orders/<pk>/cancel/``), handed to the handler
    # as ``LeanRequest.argument``: any path segment without a ``/`` or ``.`` (what Django's
    # router matches; the handler decides whether it names anything).
    argument: str | None = None
    # A request without a body is plain too (a POST whose every field is optional).
    empty_body: bool = False


_MARK = "lean-argument"  # stands for the argument when the route's path is reversed


class _RouteMetrics:
    """django-prometheus' middleware metrics for one view and method, children bound once."""

    def __init__(self, view: str, method: str) -> None:
        m = Metrics.get_instance()
        self.before_requests, self.before_responses = m.requests_total, m.responses_total
        self.latency_with_middlewares = m.requests_latency_before
        self.by_method = m.requests_by_method.labels(method=method)
        self.by_transport = m.requests_by_transport.labels(transport="http")
        self.by_view = m.requests_by_view_transport_method.labels(view=view, transport="http", method=method)
        self.body_in, self.body_out = m.requests_body_bytes, m.responses_body_bytes
        self.latency = m.requests_latency_by_view_method.labels(view=view, method=method)
        self.by_status, self.by_status_view = m.responses_by_status, m.responses_by_status_view_method
        self.by_charset = m.responses_by_charset.labels(charset="utf-8")
        self.view, self.method = view, method

    def record(self, *, status: int, body_in: int, body_out: int, seconds: float) -> None:
        self.before_requests.inc()
        self.by_method.inc()
        self.by_transport.inc()
        self.body_in.observe(body_in)
        self.by_view.inc()
        code = str(status)
        self.by_status.labels(status=code).inc()
        self.by_status_view.labels(status=code, view=self.view, method=self.method).inc()
        self.by_charset.inc()
        self.body_out.observe(body_out)
        self.latency.observe(seconds)
        self.before_responses.inc()
        self.latency_with_middlewares.observe(seconds)


class LeanRoutes:
    """The WSGI application: ``routes`` by a lean handler when it can, else ``django``."""

    def __init__(self, django: Callable[..., Iterable[bytes]], routes: Iterable[LeanRoute]) -> None:
        self.django = django
        self.routes: dict[tuple[str, str], tuple[LeanRoute, _RouteMetrics]] = {}
        self.enabled = (
            bool(getattr(settings, "SAGA_LEAN_ROUTES", True))
            and not tracing_enabled()
            # HTTPS handled by Django's SecurityMiddleware (redirects, HSTS, a proxy's header)
            and not (
                settings.SECURE_SSL_REDIRECT
                or settings.SECURE_HSTS_SECONDS
                or settings.SECURE_PROXY_SSL_HEADER
            )
        )
        # With an argument: (method, the path before it, the path after it).
        self.argument_routes: list[tuple[str, str, str, tuple[LeanRoute, _RouteMetrics]]] = []
        self.security_headers = security_headers()
        for route in routes:
            metrics = _RouteMetrics(route.url_name, route.method)
            if route.argument is None:
                self.routes[(route.method, reverse(route.url_name))] = (route, metrics)
            else:
                before, after = reverse(route.url_name, kwargs={route.argument: _MARK}).split(_MARK)
                self.argument_routes.append((route.method, before, after, (route, metrics)))

    def _route(self, method: str, path: str) -> tuple[tuple[LeanRoute, _RouteMetrics], str] | None:
        found = self.routes.get((method, path))
        if found is not None:
            return found, ""
        for route_method, before, after, found in self.argument_routes:
            if method == route_method and path.startswith(before) and path.endswith(after):
                argument = path[len(before) : len(path) - len(after)]
                if argument and "/" not in argument and "." not in argument:
                    return found, argument
        return None

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        routed = (
            self._route(environ["REQUEST_METHOD"], environ.get("PATH_INFO", "")) if self.enabled else None
        )
        if routed is None or not self._plain(environ, empty_ok=routed[0][0].empty_body):
            return self.django(environ, start_response)
        (route, metrics), argument = routed
        started = time.perf_counter()
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        signals.request_started.send(sender=type(self), environ=environ)
        try:
            answer = self._answer(route, LeanRequest(environ, body, argument))
        finally:
            signals.request_finished.send(sender=type(self))
        if answer is None:  # not sure: Django answers, reading the same body
            environ["wsgi.input"] = io.BytesIO(body)
            return self.django(environ, start_response)
        status, content, extra = answer
        headers = [
            ("Content-Type", "application/json"),
            ("Allow", route.allow),
            *self.security_headers,
            ("Content-Length", str(len(content))),
            *extra,
        ]
        start_response(f"{status} {HTTPStatus(status).phrase}", headers)
        metrics.record(
            status=status, body_in=length, body_out=len(content), seconds=time.perf_counter() - started
        )
        return [content]

    @staticmethod
    def _plain(environ: dict[str, Any], *, empty_ok: bool = False) -> bool:
        """A request a lean handler may read: a JSON body of a known, bounded length (or, where
        the route allows it, no body at all), and an answer in JSON acceptable; anything else
        (chunked, too large, another type) is Django's to refuse in its own words."""
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return False
        return (
            (length > 0 or empty_ok)
            and 0 <= length <= settings.DATA_UPLOAD_MAX_MEMORY_SIZE
            and "HTTP_TRANSFER_ENCODING" not in environ
            and not environ.get("SCRIPT_NAME")
            and environ.get("wsgi.url_scheme") == "http"  # HTTPS: Django's security middleware
            and (length == 0 or environ.get("CONTENT_TYPE", "").lower() in JSON_TYPES)
            and environ.get("HTTP_ACCEPT", "") in ANY_JSON_ACCEPT
        )

    @staticmethod
    def _answer(route: LeanRoute, request: LeanRequest) -> tuple[int, bytes, list[tuple[str, str]]] | None:
        try:
            answer = route.handler(request)
        except (OperationalError, InterfaceError):
            log.warning("the database is away: 503 for %s %s", route.method, request.environ["PATH_INFO"])
            return _as_answer(unavailable("database"))
        except Exception:
            log.exception("Internal Server Error: %s", request.environ["PATH_INFO"])
            return _as_answer(handler500(None))  # type: ignore[arg-type]
        return None if answer is None else (*answer, [])


def _as_answer(response: Any) -> tuple[int, bytes, list[tuple[str, str]]]:
    extra = [
        (name, value) for name, value in response.items() if name not in ("Content-Type", "Content-Length")
    ]
    return response.status_code, response.content, extra
