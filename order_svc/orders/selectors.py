from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, NamedTuple

from django.db import connection
from django.db.models import Count, JSONField, QuerySet
from django.utils import timezone

from common.messaging.statements import statement_cursor
from order_svc.orders import statements
from order_svc.orders.models import OPEN_STATUSES, Order

_JSON_COLUMNS = frozenset(
    field.column for field in Order._meta.concrete_fields if isinstance(field, JSONField)
)


class Line(NamedTuple):
    """An order line as the API shows it."""

    sku: str
    quantity: int
    unit_price: Decimal | None


class Step(NamedTuple):
    """A step of the order's timeline as the API shows it."""

    event_type: str
    service: str
    occurred_at: datetime
    event_id: str


def order_from_row(fields: Sequence[str], row: Sequence[Any]) -> Order:
    """An Order from a plain row of ``fields`` (in the model's field order; the others are
    left unread). jsonb arrives as text with Django's psycopg2 setup."""
    values = [
        json.loads(value) if name in _JSON_COLUMNS and isinstance(value, str) else value
        for name, value in zip(fields, row, strict=True)
    ]
    return Order.from_db(connection.alias, fields, values)


def order_list(*, status: str | None = None, customer_id: str | None = None) -> QuerySet[Order]:
    orders = Order.objects.prefetch_related("lines", "timeline").order_by("-created_at", "id")
    if status:
        orders = orders.filter(status=status)
    if customer_id:
        orders = orders.filter(customer_id=customer_id)
    return orders


def order_get(*, order_id: str) -> Order | None:
    """The order with its lines and timeline (``line_views``, ``step_views``): three prepared
    statements (GET /api/orders/{id}/ is what clients poll; the ORM's prefetching cost
    several times the queries)."""
    with statement_cursor() as cursor:
        row = statements.order_read.execute(cursor, [order_id]).fetchone()
        if row is None:
            return None
        order = order_from_row(statements.ALL_FIELDS, row)
        order.line_views = [
            Line(*line) for line in statements.lines_read.execute(cursor, [order_id]).fetchall()
        ]
        order.step_views = [
            Step(*step) for step in statements.timeline_read.execute(cursor, [order_id]).fetchall()
        ]
    return order


def order_stuck(*, grace_seconds: float = 0.0) -> QuerySet[Order]:
    """Non-terminal orders past their deadline (plus a grace), oldest first (a saga that needs a person)."""
    return (
        Order.objects.filter(status__in=OPEN_STATUSES)  # the open statuses: order_open_deadline
        .filter(deadline_at__lt=timezone.now() - timedelta(seconds=grace_seconds))
        .order_by("created_at")
    )


def order_stuck_counts(*, grace_seconds: float) -> dict[str, int]:
    """How many orders :func:`order_stuck` finds, by status (every open status, zeros included)."""
    rows = order_stuck(grace_seconds=grace_seconds).order_by().values("status").annotate(count=Count("id"))
    return {status.value: 0 for status in OPEN_STATUSES} | {row["status"]: row["count"] for row in rows}


def order_timeline(*, order: Order) -> list[dict[str, object]]:
    """The saga's steps in order of occurrence, with the time since the previous step."""
    steps: list[dict[str, object]] = []
    previous = None
    for event in order.timeline.order_by("occurred_at", "id"):
        steps.append(
            {
                "event_type": event.event_type,
                "service": event.service,
                "at": event.occurred_at,
                "since_previous_ms": (
                    (event.occurred_at - previous).total_seconds() * 1000 if previous else None
                ),
                "since_start_ms": (event.occurred_at - order.created_at).total_seconds() * 1000,
                "event_id": str(event.event_id),
                "detail": _detail(event.event_type, event.payload),
            }
        )
        previous = event.occurred_at
    return steps


def _detail(event_type: str, payload: dict) -> str:
    """One line a person reads: why it failed, what was retried or parked, what moved."""
    if event_type == "MessageRetried":
        return (
            f"{payload.get('service')} handled {payload.get('event_type')} after "
            f"{payload.get('attempts')} retr{'y' if payload.get('attempts') == 1 else 'ies'}: "
            f"{payload.get('last_error', '')}"
        )
    if event_type == "MessageParked":
        return (
            f"PARKED in {payload.get('service')}: {payload.get('event_type')} "
            f"(#{payload.get('parked_id')}, {payload.get('reason')}) {payload.get('last_error', '')}"
        )
    if "reason" in payload:
        return str(payload["reason"])
    if "amount" in payload:
        return f"amount {payload['amount']}"
    if "total" in payload:
        return f"total {payload['total']}"
    if "lines" in payload:
        return ", ".join(f"{line['quantity']} × {line['sku']}" for line in payload["lines"]) or "nothing held"
    return ""
