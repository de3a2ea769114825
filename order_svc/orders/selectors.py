from __future__ import annotations

from datetime import timedelta

from django.db.models import Count, QuerySet
from django.utils import timezone

from order_svc.orders.models import OPEN_STATUSES, Order


def order_list(*, status: str | None = None, customer_id: str | None = None) -> QuerySet[Order]:
    orders = Order.objects.prefetch_related("lines", "timeline").order_by("-created_at", "id")
    if status:
        orders = orders.filter(status=status)
    if customer_id:
        orders = orders.filter(customer_id=customer_id)
    return orders


def order_get(*, order_id: str) -> Order | None:
    return Order.objects.prefetch_related("lines", "timeline").filter(id=order_id).first()


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
