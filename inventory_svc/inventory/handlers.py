"""Events the Inventory service consumes; each handler is one service call."""

from __future__ import annotations

from common.messaging.envelope import Envelope
from common.messaging.registry import EventRegistry
from inventory_svc.inventory import services

registry = EventRegistry("inventory")


@registry.locks_batch
def lock_batch_products(events: list[Envelope]) -> None:
    """Several sagas in one transaction: their products, locked in sku order up front."""
    services.products_lock(
        skus=[
            item["sku"]
            for event in events
            if event.event_type == "OrderPlaced"
            for item in event.payload["items"]
        ],
        reserved_by=[event.saga_id for event in events if event.event_type != "OrderPlaced"],
    )


@registry.handles("OrderPlaced", emits=("InventoryReserved", "InventoryRejected"))
def handle_order_placed(event: Envelope) -> None:
    services.inventory_reserve(
        order_id=event.saga_id,
        customer_id=event.payload["customer_id"],
        items=event.payload["items"],
        shipping_address=event.payload["shipping_address"],
    )


@registry.handles("PaymentDeclined", emits=("InventoryReleased",), compensates="InventoryReserved")
def handle_payment_declined(event: Envelope) -> None:
    services.inventory_release(order_id=event.saga_id)


@registry.handles("ShipmentFailed", emits=("InventoryReleased",), compensates="InventoryReserved")
def handle_shipment_failed(event: Envelope) -> None:
    services.inventory_release(order_id=event.saga_id)


@registry.handles("OrderCompleted", emits=("InventoryDeducted",))
def handle_order_completed(event: Envelope) -> None:
    services.inventory_deduct(order_id=event.saga_id)


@registry.handles("OrderCancelled", emits=("InventoryReleased",), compensates="InventoryReserved")
def handle_order_cancelled(event: Envelope) -> None:
    services.inventory_cancel(order_id=event.saga_id, reason=event.payload["reason"])
