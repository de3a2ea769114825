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
from dataclasses import dataclass, field
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from common.messaging.consumer import Disposition
from common.messaging.envelope import Envelope
from common.messaging.models import CancelledSaga, InboxMessage, OutboxMessage
from inventory_svc.inventory import services
from inventory_svc.inventory.models import Product, Reservation
from tests.events import deliver_batch, deliver_drawn_batch, envelope

SKUS = ("hot-a", "hot-b")
STOCK = 6
FATE_EVENTS = {
    "completed": ("OrderCompleted", {}),
    "declined": ("PaymentDeclined", {"customer_id": "c", "code": "insufficient_funds", "reason": "poor"}),
    "ship_failed": ("ShipmentFailed", {"code": "country_not_served", "reason": "AQ"}),
}


@dataclass
class Saga:
    order_id: str
    lines: dict[str, int]
    fate: str
    placed: bool = False  # queued (delivered once the batch holding it was)
    reserved: bool = False
    fate_done: bool = False
    cancelled: bool = False
    delivered: list[Envelope] = field(default_factory=list)

    def has(self, event_type: str) -> bool:
        """Delivered (not only queued)."""
        return any(event.event_type == event_type for event in self.delivered)


class InventoryMachine(RuleBasedStateMachine):
    @initialize()
    def reset(self) -> None:
        for model in (Reservation, Product, InboxMessage, OutboxMessage, CancelledSaga):
            model.objects.all().delete()
        for sku in SKUS:
            services.product_create(sku=sku, name=sku, price=Decimal("1.00"), available=STOCK)
        self.sagas: list[Saga] = []
        self.pending: list[tuple[Saga, Envelope]] = []

    def _deliver(self, saga: Saga, event: Envelope) -> None:
        self.pending.append((saga, event))

    @precondition(lambda self: self.pending)
    @rule(data=st.data())
    def batch(self, data: st.DataObject) -> None:
        """The worker takes what arrived: the next ``size`` deliveries, maybe one of them twice."""
        taken, self.pending = deliver_drawn_batch(data, self.pending, self.sagas)
        for saga, _ in taken:
            saga.reserved = Reservation.objects.filter(order_id=saga.order_id).exists()

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
        self._deliver(
            saga, envelope("OrderCancelled", saga.order_id, {"reason": "deadline"}, producer="order")
        )
        saga.cancelled = True

    @precondition(lambda self: any(s.delivered for s in self.sagas) and not self.pending)
    @rule(data=st.data())
    def duplicate(self, data: st.DataObject) -> None:
        """At-least-once delivery: any earlier event comes again, and changes nothing."""
        saga = data.draw(st.sampled_from([s for s in self.sagas if s.delivered]))
        event = data.draw(st.sampled_from(saga.delivered))
        before = list(Product.objects.order_by("sku").values_list("available", "reserved", "version"))
        [outcome] = deliver_batch([event])
        assert outcome.disposition is Disposition.DUPLICATE
        after = list(Product.objects.order_by("sku").values_list("available", "reserved", "version"))
        assert after == before

    @precondition(lambda self: any(s.delivered for s in self.sagas))
    @rule(data=st.data())
    def redelivered(self, data: st.DataObject) -> None:
        """A copy of a delivered event joins the queue (a redelivery after a crash)."""
        saga = data.draw(st.sampled_from([s for s in self.sagas if s.delivered]))
        self.pending.append((saga, data.draw(st.sampled_from(saga.delivered))))

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
    InventoryMachine.TestCase.settings = settings(
        max_examples=40,
        stateful_step_count=30,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    InventoryMachine.TestCase().runTest()
