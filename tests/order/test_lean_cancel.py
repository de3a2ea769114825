"""A client's cancel in front of Django (common/web/wsgi.py, order_svc/orders/api.py
cancel_lean), called as gunicorn calls it, against real PostgreSQL: the common case answered
as Django answers it (202, or 409 past PENDING), everything else handed to Django intact."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from django.test import override_settings

from common.messaging.models import OutboxMessage
from common.web.wsgi import LeanRoutes
from order_svc.orders.models import Order, OrderStatus
from order_svc.wsgi import ROUTES
from tests.order.test_lean_post import ORDER, CountingDjango, answered_alike, call

pytestmark = pytest.mark.django_db(transaction=True)


def front(*, enabled: bool = True) -> tuple[LeanRoutes, CountingDjango]:
    django = CountingDjango()
    with override_settings(SAGA_LEAN_ROUTES=enabled):
        return LeanRoutes(django, ROUTES), django


def cancel(app: LeanRoutes, target: str, body: Any = None, **headers: str | None) -> tuple:
    return call(app, body, path=f"/api/orders/{target}/cancel/", **headers)


def placed(app: LeanRoutes) -> str:
    status, _, body = call(app, ORDER)
    assert status == 201
    return body["id"]


def cancelled_alike(lean: tuple, plain: tuple, lean_target: str, plain_target: str, *, status: int) -> tuple:
    """``answered_alike`` for a cancel of ``lean_target`` by the lean path, ``plain_target`` by Django."""
    return answered_alike(
        lean,
        plain,
        lambda app: cancel(app, lean_target),
        lambda app: cancel(app, plain_target),
        status=status,
        view="order-cancel",
    )


def test_a_cancel_is_answered_in_front_of_django_as_django_answers_it() -> None:
    lean, plain = front(), front(enabled=False)
    first, second = placed(lean[0]), placed(lean[0])
    body, body_d = cancelled_alike(lean, plain, first, second, status=202)
    for key in ("status", "failure_reason", "items", "shipping_address"):
        assert body[key] == body_d[key]
    assert body["status"] == OrderStatus.COMPENSATING
    assert body["failure_reason"] == "cancelled by the client"
    assert [step["event_type"] for step in body["timeline"]] == ["OrderPlaced", "OrderCancelled"]
    assert OutboxMessage.objects.filter(saga_id=first, event_type="OrderCancelled").count() == 1


def test_a_second_cancel_is_the_same_409_as_djangos() -> None:
    lean, plain = front(), front(enabled=False)
    order_id = placed(lean[0])
    assert cancel(lean[0], order_id)[0] == 202
    lean[1].calls = 0
    body, body_d = cancelled_alike(lean, plain, order_id, order_id, status=409)
    assert body == body_d
    assert body["error"] == "conflict"
    assert OutboxMessage.objects.filter(saga_id=order_id, event_type="OrderCancelled").count() == 1


def test_a_reason_in_the_body_is_kept() -> None:
    app, django = front()
    order_id = placed(app)
    status, _, body = cancel(app, order_id, {"reason": "changed my mind"})
    assert (status, django.calls) == (202, 0)
    assert body["failure_reason"] == Order.objects.get(id=order_id).failure_reason == "changed my mind"


@pytest.mark.parametrize(
    ("path", "body", "headers", "status"),
    [
        ("unknown", None, {}, 404),
        ("not-a-uuid", None, {}, 404),
        ("ORDER", None, {"HTTP_AUTHORIZATION": "Bearer wrong"}, 401),
        ("ORDER", None, {"HTTP_AUTHORIZATION": None}, 401),
        ("ORDER", None, {"HTTP_ACCEPT": "text/html"}, 406),
        ("ORDER", {"reason": ""}, {}, 400),
        ("ORDER", {"reason": 5}, {}, 400),
        ("ORDER", b"{nope", {}, 400),
        ("ORDER", {"reason": "x", "extra": 1}, {}, 202),  # DRF ignores unknown keys
        ("ORDER", [1, 2], {}, 202),  # not an object: the view reads no reason from it
        ("ORDER", {"reason": "x"}, {"CONTENT_TYPE": "text/plain"}, 415),
        ("ORDER", None, {"HTTP_TRANSFER_ENCODING": "chunked"}, 411),
    ],
)
def test_anything_but_the_common_case_is_left_to_django(path, body, headers, status) -> None:
    app, django = front()
    order_id = placed(app)
    target = {"ORDER": order_id, "unknown": str(uuid.uuid4())}.get(path, path)
    answered, _, content = cancel(app, target, body, **headers)
    assert (answered, django.calls) == (status, 1)
    if status >= 400:
        assert {"error", "message"} <= content.keys()


def test_other_paths_are_not_taken_for_a_cancel() -> None:
    app, django = front()
    order_id = placed(app)
    answers = [
        call(app, None, path=path)[0]
        for path in (
            f"/api/orders/{order_id}/cancel",  # Django redirects to the slash
            f"/api/orders/{order_id}/x/cancel/",
            "/api/orders//cancel/",
            f"/api/orders/{order_id}.json/cancel/",
        )
    ]
    assert answers == [301, 404, 404, 404]
    assert django.calls == 4
    assert Order.objects.get(id=order_id).status == OrderStatus.PENDING
