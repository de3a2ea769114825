"""Events the Shipping service consumes; each handler is one service call."""

from __future__ import annotations

from common.messaging.envelope import Envelope
from common.messaging.registry import EventRegistry
from shipping_svc.shipping import services

registry = EventRegistry("shipping")


@registry.handles("OrderPlaced", bind=False)
def handle_order_placed(event: Envelope) -> None:
    """Retired: the address now travels with PaymentCompleted. Kept for an OrderPlaced queued
    before the upgrade, whose saga's PaymentCompleted may come without one."""
    services.destination_record(order_id=event.saga_id, address=event.payload["shipping_address"])


@registry.handles("PaymentCompleted", emits=("ShipmentScheduled", "ShipmentFailed"))
def handle_payment_completed(event: Envelope) -> None:
    services.shipment_schedule(order_id=event.saga_id, shipping_address=event.payload.get("shipping_address"))


@registry.handles("OrderCancelled", emits=("ShipmentCancelled",), compensates="ShipmentScheduled")
def handle_order_cancelled(event: Envelope) -> None:
    services.shipment_cancel(order_id=event.saga_id, reason=event.payload["reason"])
