"""Events the Order service consumes: each records the saga view, then one service call."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

from common.messaging.envelope import Envelope
from common.messaging.registry import EventRegistry
from order_svc.orders import services

registry = EventRegistry("order")
registry.originates("OrderPlaced", by="POST /api/orders/")
registry.originates("OrderCancelled", by="POST /api/orders/{id}/cancel/ or the deadline sweep")


def on(
    event_type: str, *, notice: bool = False, **kwargs: object
) -> Callable[[Callable[[Envelope], None]], Callable]:
    """Register a handler that first adds the event to the order's timeline.

    A ``notice`` (a step was retried or parked in some service) is timeline-only and names
    whatever saga id the message it is about carried; a parked garbage message's made-up id
    names no order here, and never will (orders are created here first). Such a notice is
    dropped with a log line (services.timeline_note), not retried into the parking lot.
    """

    def decorator(func: Callable[[Envelope], None]) -> Callable[[Envelope], None]:
        def handler(event: Envelope) -> None:
            if notice:
                services.timeline_note(order_id=event.saga_id, envelope=event)
            else:
                services.timeline_record(order_id=event.saga_id, envelope=event)
                func(event)

        handler.__name__ = func.__name__
        handler.__doc__ = func.__doc__
        return registry.handles(event_type, **kwargs)(handler)

    return decorator


@on("InventoryReserved")
def handle_inventory_reserved(event: Envelope) -> None:
    services.order_price(
        order_id=event.saga_id,
        total=Decimal(event.payload["total"]),
        unit_prices={line["sku"]: Decimal(line["unit_price"]) for line in event.payload["lines"]},
    )


@on("InventoryRejected")
def handle_inventory_rejected(event: Envelope) -> None:
    services.order_reject(order_id=event.saga_id, reason=event.payload["reason"])


@on("PaymentCompleted")
def handle_payment_completed(event: Envelope) -> None:
    """Timeline only: shipping acts on it."""


@on("PaymentDeclined")
def handle_payment_declined(event: Envelope) -> None:
    services.order_compensate(
        order_id=event.saga_id, failed_step="PaymentDeclined", reason=event.payload["reason"]
    )


@on("ShipmentScheduled", emits=("OrderCompleted",))
def handle_shipment_scheduled(event: Envelope) -> None:
    services.order_complete(order_id=event.saga_id)


@on("ShipmentFailed")
def handle_shipment_failed(event: Envelope) -> None:
    services.order_compensate(
        order_id=event.saga_id, failed_step="ShipmentFailed", reason=event.payload["reason"]
    )


@on("InventoryReleased")
def handle_inventory_released(event: Envelope) -> None:
    services.order_confirm_compensation(order_id=event.saga_id, event_type=event.event_type)


@on("ShipmentCancelled")
def handle_shipment_cancelled(event: Envelope) -> None:
    services.order_confirm_compensation(order_id=event.saga_id, event_type=event.event_type)


@on("PaymentRefunded")
def handle_payment_refunded(event: Envelope) -> None:
    services.order_confirm_compensation(order_id=event.saga_id, event_type=event.event_type)


@on("InventoryDeducted")
def handle_inventory_deducted(event: Envelope) -> None:
    """Timeline only: the reservation left the warehouse."""


@on("MessageRetried", notice=True)
def handle_message_retried(event: Envelope) -> None:
    """Timeline only: a step of this saga needed retries (payload: which, how many, why)."""


@on("MessageParked", notice=True)
def handle_message_parked(event: Envelope) -> None:
    """Timeline only: a step of this saga was parked; an operator must replay or discard it."""
