"""The order POST in front of Django (common/web/wsgi.py, order_svc/orders/api.py place_lean),
called as gunicorn calls it — a WSGI environ — against real PostgreSQL: it answers the
common case exactly as Django would, and hands everything else to Django intact."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from typing import Any

import pytest
from django.conf import settings
from django.core.handlers.wsgi import WSGIHandler
from django.test import override_settings
from prometheus_client import REGISTRY

from common.messaging.models import OutboxMessage
from common.web.wsgi import LeanRoute, LeanRoutes
from order_svc.orders.api import place_lean
from order_svc.orders.models import Order, SagaEvent
from tests.unavailable import database_away

pytestmark = pytest.mark.django_db(transaction=True)

ORDER = {
    "customer_id": "c-lean",
    "items": [{"sku": "s1", "quantity": 2}],
    "shipping_address": {"country": "FR"},
}
VARYING = {"Date", "Content-Length"}


class CountingDjango:
    """Django's WSGI handler, counting the requests that reach it."""

    def __init__(self) -> None:
        self.handler, self.calls = WSGIHandler(), 0

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        self.calls += 1
        return self.handler(environ, start_response)


def front(*, enabled: bool = True, **overrides: Any) -> tuple[LeanRoutes, CountingDjango]:
    django = CountingDjango()
    with override_settings(SAGA_LEAN_ROUTES=enabled, **overrides):
        app = LeanRoutes(
            django, [LeanRoute("POST", "order-list", place_lean, allow="GET, POST, HEAD, OPTIONS")]
        )
    return app, django


def call(
    app: LeanRoutes,
    body: bytes | dict[str, Any] | list[Any] | None,
    *,
    path: str = "/api/orders/",
    **headers: str,
) -> tuple[int, dict[str, str], dict[str, Any]]:
    """POST ``body`` (JSON unless bytes; None: no body, as http.client sends it) to ``path``
    as gunicorn calls the application; ``headers`` as WSGI keys, None removing one."""
    raw = b"" if body is None else body if isinstance(body, bytes) else json.dumps(body).encode()
    environ = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": path,
        "SCRIPT_NAME": "",
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8001",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(raw),
        "wsgi.errors": io.StringIO(),
        "CONTENT_LENGTH": str(len(raw)),
        "HTTP_AUTHORIZATION": f"Bearer {settings.SAGA_API_TOKEN}",
    }
    if raw:
        environ["CONTENT_TYPE"] = "application/json"
    for name, value in headers.items():
        key = name.upper()
        if value is None:
            environ.pop(key, None)
        else:
            environ[key] = value
    answered: dict[str, Any] = {}

    def start_response(status: str, response_headers: list[tuple[str, str]], *_: Any) -> None:
        answered["status"], answered["headers"] = int(status.split()[0]), dict(response_headers)

    content = b"".join(app(environ, start_response))
    assert int(answered["headers"].get("Content-Length", len(content))) == len(content)
    return answered["status"], answered["headers"], json.loads(content) if content else {}


def responses(status: int, view: str = "order-list") -> float:
    labels = {"status": str(status), "view": view, "method": "POST"}
    return REGISTRY.get_sample_value("django_http_responses_total_by_status_view_method_total", labels) or 0.0


Ask = Callable[[LeanRoutes], tuple[int, dict[str, str], dict[str, Any]]]


def answered_alike(
    lean: tuple[LeanRoutes, CountingDjango],
    plain: tuple[LeanRoutes, CountingDjango],
    ask_lean: Ask,
    ask_plain: Ask,
    *,
    status: int,
    view: str,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The lean path answers ``status`` without Django and counts it in django-prometheus'
    metrics; Django, asked the same, answers the same status and headers (but the date and
    length) and a body of the same keys. The two bodies."""
    before = responses(status, view)
    answered, headers, body = ask_lean(lean[0])
    assert (answered, lean[1].calls) == (status, 0)
    assert responses(status, view) == before + 1
    answered_d, headers_d, body_d = ask_plain(plain[0])
    assert (answered_d, plain[1].calls) == (status, 1)
    assert {k: v for k, v in headers.items() if k not in VARYING} == {
        k: v for k, v in headers_d.items() if k not in VARYING
    }
    assert body.keys() == body_d.keys()
    return body, body_d


def test_a_plain_order_is_answered_in_front_of_django_as_django_answers_it() -> None:
    body, body_d = answered_alike(
        front(),
        front(enabled=False),
        lambda app: call(app, ORDER),
        lambda app: call(app, ORDER),
        status=201,
        view="order-list",
    )
    for key in ("customer_id", "status", "failure_reason", "total", "items", "shipping_address"):
        assert body[key] == body_d[key]
    assert [step["event_type"] for step in body["timeline"]] == ["OrderPlaced"]
    # What it wrote is what the Django path writes: the order, its lines, its event and step.
    order = Order.objects.get(id=body["id"])
    assert [(line.sku, line.quantity) for line in order.lines.all()] == [("s1", 2)]
    assert OutboxMessage.objects.filter(saga_id=order.id, event_type="OrderPlaced").count() == 1
    assert SagaEvent.objects.filter(order_id=order.id, event_type="OrderPlaced").count() == 1


def test_a_replayed_idempotency_key_is_answered_with_the_same_order() -> None:
    app, django = front()
    first = call(app, ORDER, HTTP_IDEMPOTENCY_KEY="k-lean-1")
    again = call(app, ORDER, HTTP_IDEMPOTENCY_KEY="k-lean-1")
    assert (first[0], again[0]) == (201, 200)
    assert first[2]["id"] == again[2]["id"]
    assert Order.objects.filter(idempotency_key="k-lean-1").count() == 1
    conflict = call(app, {**ORDER, "customer_id": "other"}, HTTP_IDEMPOTENCY_KEY="k-lean-1")
    assert (conflict[0], conflict[2]["error"], django.calls) == (409, "conflict", 1)  # Django words it


@pytest.mark.parametrize(
    ("body", "headers", "status"),
    [
        (ORDER, {"HTTP_AUTHORIZATION": "Bearer wrong"}, 401),
        (ORDER, {"HTTP_AUTHORIZATION": None}, 401),
        (ORDER, {"HTTP_AUTHORIZATION": f"Token {'x'}"}, 401),
        (ORDER, {"HTTP_IDEMPOTENCY_KEY": ""}, 400),
        (ORDER, {"HTTP_ACCEPT": "text/html"}, 406),
        (ORDER, {"CONTENT_TYPE": "text/plain"}, 415),
        (ORDER, {"CONTENT_TYPE": "application/json; charset=latin-1"}, 201),  # DRF decodes it
        ({**ORDER, "items": [{"sku": "s1", "quantity": 2.0}]}, {}, 201),  # the serializer takes 2.0
        ({**ORDER, "items": []}, {}, 400),
        ({**ORDER, "extra": 1}, {}, 201),  # DRF ignores unknown keys
        (b'{"customer_id": NaN}', {}, 400),
        (b"\xff\xfe", {}, 400),
        (b"[" * 5000, {}, 400),
        (ORDER, {"HTTP_TRANSFER_ENCODING": "chunked"}, 201),
    ],
)
def test_anything_but_the_common_case_is_left_to_django(body, headers, status) -> None:
    app, django = front()
    answered, _, content = call(app, body, **headers)
    assert (answered, django.calls) == (status, 1)
    if status >= 400:
        assert {"error", "message"} <= content.keys()


def test_a_body_over_the_limit_is_refused_by_django() -> None:
    app, django = front()
    big = {**ORDER, "customer_id": "c" * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 1)}
    assert call(app, big)[0] == 413
    assert django.calls == 1


def test_the_database_away_is_a_503_with_retry_after() -> None:
    app, django = front()
    with database_away():
        status, headers, body = call(app, ORDER)
    assert (status, django.calls) == (503, 0)
    assert headers["Retry-After"] == "5"
    assert (body["error"], body["unavailable"]) == ("service_unavailable", "database")
    assert call(app, ORDER)[0] == 201  # and the next request has a connection again


def test_switched_off_django_answers_every_post() -> None:
    app, django = front(enabled=False)
    assert call(app, ORDER)[0] == 201
    assert django.calls == 1


@pytest.mark.parametrize(
    "overrides",
    [
        {"SECURE_SSL_REDIRECT": True},
        {"SECURE_HSTS_SECONDS": 3600},
        {"SECURE_PROXY_SSL_HEADER": ("HTTP_X_FORWARDED_PROTO", "https")},
    ],
)
def test_with_https_settings_django_answers(overrides) -> None:
    app, django = front(**overrides)
    with override_settings(**overrides):
        call(app, ORDER)
    assert django.calls == 1  # redirects and HSTS stay Django's SecurityMiddleware's


def test_the_security_headers_follow_the_settings() -> None:
    app, _ = front(X_FRAME_OPTIONS="SAMEORIGIN", SECURE_REFERRER_POLICY=["origin", "strict-origin"])
    status, headers, _ = call(app, ORDER)
    assert status == 201
    assert (headers["X-Frame-Options"], headers["Referrer-Policy"]) == ("SAMEORIGIN", "origin,strict-origin")
