"""The Order service's test fixtures: an order placed through the service, and the
InventoryReserved that prices it (shared by the order test modules)."""

from __future__ import annotations

from common.messaging.envelope import Envelope
from order_svc.orders import services
from order_svc.orders.models import Order
from tests.events import envelope


def place(**kwargs) -> Order:
    order, _ = services.order_place(
        customer_id="alice",
        items=[{"sku": "b", "quantity": 1}, {"sku": "a", "quantity": 2}],
        shipping_address={"country": "FR"},
        **kwargs,
    )
    return order


def reserved(order_id: str) -> Envelope:
    return envelope(
        "InventoryReserved",
        order_id,
        {
            "customer_id": "alice",
            "total": "7.00",
            "lines": [
                {"sku": "a", "quantity": 2, "unit_price": "3.00"},
                {"sku": "b", "quantity": 1, "unit_price": "1.00"},
            ],
        },
        producer="inventory",
    )
