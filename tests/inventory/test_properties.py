"""Stateful property test: the inventory handlers under random interleavings and batches.

Orders with random lines over two skus, each with a fate (completed, declined at
payment, failed at shipping, cancelled). Their events are delivered in any order
causality allows (only OrderCancelled may overtake OrderPlaced; a fate event follows
a reservation), with duplicates of earlier deliveries mixed in. Events queue up and
are delivered as the worker's group commit does: in batches of random length, each
one transaction (several sagas' products locked up front), with duplicates inside a
batch too. After every step the stock invariants of SPEC §5 must hold.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from decimal import Decimal

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import initialize, invariant, precondition, rule

from common.messaging.envelope import Envelope
from inventory_svc.inventory import services
from inventory_svc.inventory.models import Product, Reservation
from tests.events import envelope
from tests.machines import DeliveredSaga, DeliveryMachine

SKUS = ("hot-a", "hot-b")
STOCK = 6
FATE_EVENTS = {
    "completed": ("OrderCompleted", {}),
    "declined": ("PaymentDeclined", {"customer_id": "c", "code": "insufficient_funds", "reason": "poor"}),
    "ship_failed": ("ShipmentFailed", {"code": "country_not_served", "reason": "AQ"}),
}


@dataclass
class Saga(DeliveredSaga):
    lines: dict[str, int]
    fate: str
    placed: bool = False  # queued (delivered once the batch holding it was)
    reserved: bool = False
    fate_done: bool = False


class InventoryMachine(DeliveryMachine):
    @initialize()
    def reset(self) -> None:
        self.wipe(Reservation, Product)
        for sku in SKUS:
            services.product_create(sku=sku, name=sku, price=Decimal("1.00"), available=STOCK)

    def settle(self, taken: list[tuple[Saga, Envelope]]) -> None:
        for saga, _ in taken:
            saga.reserved = Reservation.objects.filter(order_id=saga.order_id).exists()

    def holdings(self) -> list[tuple[int, int, int]]:
        return list(Product.objects.order_by("sku").values_list("available", "reserved", "version"))

    @rule(
        lines=st.dictionaries(st.sampled_from(SKUS), st.integers(1, 4), min_size=1),
        fate=st.sampled_from(["completed", "declined", "ship_failed", "cancelled"]),
    )
    def new_order(self, lines: dict[str, int], fate: str) -> None:
        self.sagas.append(Saga(str(uuid.uuid4()), lines, fate))

    @precondition(lambda self: any(not s.placed for s in self.sagas))
    @rule(data=st.data())
    def order_placed(self, data: st.DataObject) -> None:
        saga = data.draw(st.sampled_from([s for s in self.sagas if not s.placed]))
        items = [{"sku": sku, "quantity": q} for sku, q in saga.lines.items()]
        self._deliver(
            saga,
            envelope(
                "OrderPlaced",
                saga.order_id,
                {"customer_id": "c", "items": items, "shipping_address": {"country": "FR"}},
                producer="order",
            ),
        )
        saga.placed = True

    @precondition(
        lambda self: any(
            s.reserved and not s.fate_done and s.fate in FATE_EVENTS and not s.cancelled for s in self.sagas
        )
    )
    @rule(data=st.data())
    def fate_arrives(self, data: st.DataObject) -> None:
        saga = data.draw(
            st.sampled_from(
                [
                    s
                    for s in self.sagas
                    if s.reserved and not s.fate_done and s.fate in FATE_EVENTS and not s.cancelled
                ]
            )
        )
        event_type, payload = FATE_EVENTS[saga.fate]
        self._deliver(saga, envelope(event_type, saga.order_id, payload))
        saga.fate_done = True

    @precondition(
        lambda self: any(
            s.fate in ("cancelled", "declined")
            and not s.cancelled
            and not (s.fate == "declined" and not s.fate_done)
            for s in self.sagas
        )
    )
    @rule(data=st.data())
    def order_cancelled(self, data: st.DataObject) -> None:
        """A cancellation: before or after the reservation; or racing a decline's release."""
        saga = data.draw(
            st.sampled_from(
                [
                    s
                    for s in self.sagas
                    if s.fate in ("cancelled", "declined")
                    and not s.cancelled
                    and not (s.fate == "declined" and not s.fate_done)
                ]
            )
        )
        self.cancel(saga)

    @invariant()
    def stock_is_conserved_and_never_negative(self) -> None:
        for product in Product.objects.all():
            deducted = sum(r.quantity for r in Reservation.objects.filter(product=product, status="DEDUCTED"))
            assert product.available >= 0
            assert product.reserved >= 0
            assert product.received == product.available + product.reserved + deducted
            held = sum(r.quantity for r in Reservation.objects.filter(product=product, status="RESERVED"))
            assert product.reserved == held

    @invariant()
    def every_order_holds_what_its_delivered_events_say(self) -> None:
        for saga in getattr(self, "sagas", []):
            statuses = set(
                Reservation.objects.filter(order_id=saga.order_id).values_list("status", flat=True)
            )
            assert len(statuses) <= 1, (saga, statuses)  # all lines move together
            status = statuses.pop() if statuses else None
            fate = FATE_EVENTS.get(saga.fate, ("-",))[0]
            if saga.has("OrderCancelled"):
                assert status in (None, "RELEASED"), (saga, status)
            elif saga.has(fate):
                assert status == ("DEDUCTED" if saga.fate == "completed" else "RELEASED"), (saga, status)
            elif saga.has("OrderPlaced"):
                assert status in (None, "RESERVED"), (saga, status)


@pytest.mark.django_db
def test_inventory_handlers_keep_stock_invariants_under_any_interleaving() -> None:
    InventoryMachine.run()
