"""Events the Payment service consumes; each handler is one service call."""

from __future__ import annotations

from decimal import Decimal

from common.messaging.envelope import Envelope
from common.messaging.registry import EventRegistry
from payment_svc.payments import services

registry = EventRegistry("payment")


@registry.locks_batch
def lock_batch_accounts(events: list[Envelope]) -> None:
    """Several sagas in one transaction: their accounts, locked in customer order up front."""
    services.accounts_lock(
        customer_ids=[e.payload["customer_id"] for e in events if e.event_type == "InventoryReserved"],
        charged_for=[e.saga_id for e in events if e.event_type != "InventoryReserved"],
    )


@registry.handles("InventoryReserved", emits=("PaymentCompleted", "PaymentDeclined"))
def handle_inventory_reserved(event: Envelope) -> None:
    services.payment_charge(
        order_id=event.saga_id,
        customer_id=event.payload["customer_id"],
        amount=Decimal(event.payload["total"]),
        shipping_address=event.payload.get("shipping_address"),  # v1 (before the upgrade): none
    )


@registry.handles("ShipmentFailed", emits=("PaymentRefunded",), compensates="PaymentCompleted")
def handle_shipment_failed(event: Envelope) -> None:
    services.payment_refund(order_id=event.saga_id)


@registry.handles("OrderCancelled", emits=("PaymentRefunded",), compensates="PaymentCompleted")
def handle_order_cancelled(event: Envelope) -> None:
    services.payment_cancel(order_id=event.saga_id, reason=event.payload["reason"])
