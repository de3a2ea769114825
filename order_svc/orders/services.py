"""Order use cases: each one transaction; the only place that emits events."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from common.messaging.envelope import Envelope
from common.messaging.groupcommit import defer
from common.messaging.outbox import emit
from common.messaging.sagas import saga_step
from common.messaging.statements import statement_cursor
from common.observability.tracing import annotate, continuing, current_trace
from order_svc.orders import statements
from order_svc.orders.metrics import saga_finished_if_terminal, saga_started
from order_svc.orders.models import Order, OrderStatus
from order_svc.orders.selectors import Line, Step, order_from_row

log = logging.getLogger(__name__)

# What a failure at each step leaves to undo: the events that confirm each undo.
COMPENSATIONS_AFTER = {
    "PaymentDeclined": ["InventoryReleased"],
    "ShipmentFailed": ["InventoryReleased", "PaymentRefunded"],
    # Every service answers OrderCancelled, whether or not it had acted.
    "OrderCancelled": ["InventoryReleased", "PaymentRefunded", "ShipmentCancelled"],
}


class IdempotencyConflict(Exception):
    """An Idempotency-Key was reused with a different request body."""


class OrderNotFound(Exception):
    pass


class OrderNotCancellable(Exception):
    """Only a PENDING order can be cancelled."""


@dataclass(frozen=True)
class _TimelineRow:
    order_id: str
    envelope: Envelope
    notice: bool  # a notice about an unknown order is dropped (logged), not an error


def _record(order_id: str, envelope: Envelope, *, notice: bool = False) -> None:
    """Add ``envelope`` to the order's timeline, once (at the end of a group-commit batch)."""
    defer(_timeline_write, _TimelineRow(order_id, envelope, notice))


def _timeline_write(rows: list[_TimelineRow]) -> None:
    """Write timeline rows in one statement; OrderNotFound if an event names no order here.

    A row already there (a redelivered event) is left alone. The statement also returns
    the rows whose order does not exist: for a saga event that is an error (retried), for
    a notice (a step retried or parked somewhere) about a made-up saga id it is logged
    and dropped, as such an order never will exist (orders are created here first).
    """
    with statement_cursor() as cursor:
        statements.timeline_write.execute(cursor, _timeline_params(rows))
        missing = {str(event_id) for (event_id,) in cursor.fetchall()}
    for row in rows:
        if row.envelope.event_id not in missing:
            continue
        if not row.notice:
            raise OrderNotFound(
                f"event {row.envelope.event_type} {row.envelope.event_id} names unknown order {row.order_id}"
            )
        log.info(
            "%s about unknown order %s (from %s): nothing to annotate",
            row.envelope.event_type,
            row.order_id,
            row.envelope.producer,
            extra={"saga_id": row.order_id},
        )


def _timeline_params(rows: list[_TimelineRow]) -> list[list[Any]]:
    return [
        [row.order_id for row in rows],
        [row.envelope.event_id for row in rows],
        [row.envelope.event_type for row in rows],
        [row.envelope.producer for row in rows],
        [row.envelope.occurred_at for row in rows],
        [row.envelope.causation_id for row in rows],
        [json.dumps(row.envelope.payload) for row in rows],
    ]


def _emit(order: Order, event_type: str, payload: dict[str, Any]) -> Envelope:
    envelope = emit(event_type=event_type, saga_id=str(order.id), payload=payload)
    _record(str(order.id), envelope)
    return envelope


def _locked(order_id: str) -> Order:
    """Lock the order's row and load what a saga step needs of it (one prepared statement:
    this runs for almost every event the order sees, and the ORM's queryset machinery
    cost more CPU than the query)."""
    with statement_cursor() as cursor:
        row = statements.order_lock.execute(cursor, [order_id]).fetchone()
    if row is None:
        raise OrderNotFound(f"order {order_id} does not exist")
    order = order_from_row(statements.LOCKED_FIELDS, row)
    order.status_when_loaded = order.status
    return order


def _save(order: Order) -> None:
    """``order.save(update_fields=SAGA_FIELDS)`` as one plain UPDATE (every saga step runs it)."""
    order.updated_at = timezone.now()
    values = [getattr(order, name) for name in statements.SAGA_FIELDS]
    for json_field in ("compensations_expected", "compensations_confirmed"):
        values[statements.SAGA_FIELDS.index(json_field)] = json.dumps(getattr(order, json_field))
    with statement_cursor() as cursor:
        statements.order_save.execute(cursor, [*values, order.id])
    saga_finished_if_terminal(order, was=order.status_when_loaded)


def order_place(
    *,
    customer_id: str,
    items: list[dict[str, Any]],
    shipping_address: dict[str, Any],
    idempotency_key: str | None = None,
    fingerprint: str = "",
) -> tuple[Order, bool]:
    """Create a PENDING order and emit OrderPlaced; returns (order, created).

    A repeated Idempotency-Key is found by the unique constraint (no lookup first: a
    new order, by far the common case, costs one round trip less).
    """
    now = timezone.now()
    try:
        with transaction.atomic():
            order = Order(
                customer_id=customer_id,
                shipping_address=shipping_address,
                idempotency_key=idempotency_key or None,
                request_fingerprint=fingerprint,
                deadline_at=now + timedelta(seconds=settings.SAGA_ORDER_DEADLINE_SECONDS),
                created_at=now,
                trace_context=current_trace(),  # the request's trace, or a new one
                updated_at=now,
            )
            lines = sorted(items, key=lambda item: item["sku"])
            with statement_cursor() as cursor:
                statements.order_insert.execute(
                    cursor,
                    [
                        order.id,
                        order.customer_id,
                        order.status,
                        json.dumps(shipping_address),
                        order.idempotency_key,
                        order.request_fingerprint,
                        json.dumps(order.trace_context),
                        order.deadline_at,
                        now,
                        now,
                    ],
                )
                statements.lines_insert.execute(
                    cursor, [order.id, [line["sku"] for line in lines], [line["quantity"] for line in lines]]
                )
            order._state.adding = False
            annotate(saga_id=order.id)
            with continuing(order.trace_context, "order place", saga_id=str(order.id)):
                placed = _emit(
                    order,
                    "OrderPlaced",
                    {
                        "customer_id": customer_id,
                        "items": [{"sku": line["sku"], "quantity": line["quantity"]} for line in lines],
                        "shipping_address": shipping_address,
                        "deadline_at": order.deadline_at.isoformat(),
                    },
                )
            saga_started()
        # What the 201 shows, known without reading the order back (model instances of the
        # lines and the step cost the POST a sixth of its CPU: Model.__init__ and related
        # managers).
        order.line_views = [Line(line["sku"], line["quantity"], None) for line in lines]
        order.step_views = [Step(placed.event_type, placed.producer, placed.occurred_at, placed.event_id)]
    except IntegrityError:
        # The key was used before (or by a concurrent request that won): answer like a replay.
        existing = _replay(idempotency_key, fingerprint) if idempotency_key else None
        if existing is None:
            raise
        return existing, False
    return order, True


def _replay(idempotency_key: str, fingerprint: str) -> Order | None:
    existing = Order.objects.filter(idempotency_key=idempotency_key).first()
    if existing is not None and existing.request_fingerprint != fingerprint:
        raise IdempotencyConflict(
            f"Idempotency-Key {idempotency_key!r} was already used for order {existing.id} "
            "with a different request body."
        )
    return existing


@saga_step
def timeline_note(*, order_id: str, envelope: Envelope) -> None:
    """Add a notice to the order's saga view (dropped, with a log line, if there is no such order)."""
    _record(order_id, envelope, notice=True)


@saga_step
def timeline_record(*, order_id: str, envelope: Envelope) -> None:
    """Add an event from another service to the order's saga view (OrderNotFound if no such order)."""
    _record(order_id, envelope)


@saga_step
def order_price(*, order_id: str, total: Decimal, unit_prices: dict[str, Decimal]) -> None:
    order = _locked(order_id)
    order.price(total=total)
    if unit_prices:  # one UPDATE for all lines
        with statement_cursor() as cursor:
            statements.lines_price.execute(cursor, [list(unit_prices), list(unit_prices.values()), order.id])
    _save(order)


def _pending_or_late(order_id: str, event: str) -> Order | None:
    """Lock the order; None (and a log line) if it already left PENDING.

    An outcome that arrives after the order was cancelled or finished is a late
    fact: it stays in the timeline and changes nothing. Whatever the late step did
    is undone by its own service, which received OrderCancelled too.
    """
    order = _locked(order_id)
    if order.status != OrderStatus.PENDING:
        log.info(
            "order %s is %s: late %s changes nothing",
            order_id,
            order.status,
            event,
            extra={"saga_id": order_id},
        )
        return None
    return order


@saga_step
def order_reject(*, order_id: str, reason: str) -> None:
    order = _pending_or_late(order_id, "InventoryRejected")
    if order is not None:
        order.mark_rejected(reason=reason)
        _save(order)


@saga_step
def order_compensate(*, order_id: str, failed_step: str, reason: str) -> None:
    """A step failed after others acted: wait for their undos, then CANCELLED."""
    order = _pending_or_late(order_id, failed_step)
    if order is not None:
        order.start_compensation(reason=reason, expected=COMPENSATIONS_AFTER[failed_step])
        _save(order)


def order_cancel(*, order_id: str, reason: str) -> Order:
    """Cancel a PENDING order: OrderCancelled asks every service to undo what it did."""
    with transaction.atomic():
        order = _locked(order_id)
        if order.status != OrderStatus.PENDING:
            raise OrderNotCancellable(
                f"order {order_id} is {order.status}; only a PENDING order can be cancelled"
            )
        order.start_compensation(reason=reason, expected=COMPENSATIONS_AFTER["OrderCancelled"])
        _save(order)
        # The cancellation continues the order's own trace, whoever asked for it.
        with continuing(order.trace_context, f"order cancel {order.id}", saga_id=str(order.id)):
            _emit(order, "OrderCancelled", {"reason": reason})
    return order


def order_cancel_overdue(*, limit: int = 500) -> int:
    """Cancel PENDING orders past their deadline, oldest first; returns how many."""
    overdue = list(
        Order.objects.filter(status=OrderStatus.PENDING, deadline_at__lt=timezone.now())
        .order_by("deadline_at")
        .values_list("id", "deadline_at")[:limit]
    )
    cancelled = 0
    for order_id, deadline_at in overdue:
        try:
            order_cancel(
                order_id=str(order_id),
                reason=f"deadline passed at {deadline_at.isoformat()} before the saga finished",
            )
            cancelled += 1
        except OrderNotCancellable:
            continue  # it finished meanwhile
    if cancelled:
        log.warning("cancelled %d order(s) past their deadline", cancelled)
    return cancelled


@saga_step
def order_confirm_compensation(*, order_id: str, event_type: str) -> None:
    order = _locked(order_id)
    order.confirm_compensation(event_type)
    _save(order)


@saga_step
def order_complete(*, order_id: str) -> None:
    order = _pending_or_late(order_id, "ShipmentScheduled")
    if order is not None:
        order.mark_completed()
        _save(order)
        _emit(order, "OrderCompleted", {})


def order_age_seconds(order: Order, at: datetime | None = None) -> float:
    end = order.finished_at or at or timezone.now()
    return (end - order.created_at).total_seconds()


__all__ = ["OrderStatus"]
