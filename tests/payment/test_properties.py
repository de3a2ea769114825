"""Stateful property test: the payment handlers under random interleavings and batches.

Orders charge one of two accounts; some fail at shipping (refund), some are
cancelled (before or after the charge). Events arrive in any order causality allows,
with duplicates mixed in, and are delivered as the worker's group commit does: in
batches of random length (several sagas' accounts locked up front), duplicates inside
a batch too. After every step: no balance is negative, money is conserved, and no
order is charged or refunded twice.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from decimal import Decimal

import pytest
from django.db.models import Count
from hypothesis import strategies as st
from hypothesis.stateful import initialize, invariant, precondition, rule

from common.messaging.envelope import Envelope
from payment_svc.payments import services
from payment_svc.payments.models import Account, Payment
from tests.events import envelope
from tests.machines import DeliveredSaga, DeliveryMachine

CUSTOMERS = {"rich": Decimal("100.00"), "poor": Decimal("15.00")}


@dataclass
class Saga(DeliveredSaga):
    customer: str
    amount: Decimal
    charged: bool = False
    reserved_delivered: bool = False
    ship_failed: bool = False


class PaymentMachine(DeliveryMachine):
    @initialize()
    def reset(self) -> None:
        self.wipe(Payment, Account)
        for customer, balance in CUSTOMERS.items():
            services.account_create(customer_id=customer, balance=balance)

    def settle(self, taken: list[tuple[Saga, Envelope]]) -> None:
        for saga, _ in taken:
            saga.charged = Payment.objects.filter(order_id=saga.order_id, kind="charge").exists()

    def holdings(self) -> list[Decimal]:
        return list(Account.objects.order_by("customer_id").values_list("balance", flat=True))

    @rule(customer=st.sampled_from(sorted(CUSTOMERS)), cents=st.integers(1, 4000))
    def new_order(self, customer: str, cents: int) -> None:
        self.sagas.append(Saga(str(uuid.uuid4()), customer, Decimal(cents) / 100))

    @precondition(lambda self: any(not s.reserved_delivered for s in self.sagas))
    @rule(data=st.data())
    def inventory_reserved(self, data: st.DataObject) -> None:
        saga = data.draw(st.sampled_from([s for s in self.sagas if not s.reserved_delivered]))
        self._deliver(
            saga,
            envelope(
                "InventoryReserved",
                saga.order_id,
                {
                    "customer_id": saga.customer,
                    "total": f"{saga.amount:.2f}",
                    "lines": [{"sku": "x", "quantity": 1, "unit_price": f"{saga.amount:.2f}"}],
                },
                producer="inventory",
            ),
        )
        saga.reserved_delivered = True

    @precondition(lambda self: any(s.charged and not s.ship_failed for s in self.sagas))
    @rule(data=st.data())
    def shipment_failed(self, data: st.DataObject) -> None:
        saga = data.draw(st.sampled_from([s for s in self.sagas if s.charged and not s.ship_failed]))
        self._deliver(
            saga,
            envelope(
                "ShipmentFailed",
                saga.order_id,
                {"code": "country_not_served", "reason": "AQ"},
                producer="shipping",
            ),
        )
        saga.ship_failed = True

    @precondition(lambda self: any(not s.cancelled for s in self.sagas))
    @rule(data=st.data())
    def order_cancelled(self, data: st.DataObject) -> None:
        saga = data.draw(st.sampled_from([s for s in self.sagas if not s.cancelled]))
        self.cancel(saga)

    @invariant()
    def money_is_conserved_and_never_negative(self) -> None:
        for account in Account.objects.all():
            charges = sum(
                p.amount for p in Payment.objects.filter(customer_id=account.customer_id, kind="charge")
            )
            refunds = sum(
                p.amount for p in Payment.objects.filter(customer_id=account.customer_id, kind="refund")
            )
            assert account.balance >= 0
            assert account.opening_balance == account.balance + charges - refunds

    @invariant()
    def each_order_is_charged_and_refunded_at_most_once_and_refunded_if_undone(self) -> None:
        assert not Payment.objects.values("order_id", "kind").annotate(n=Count("id")).filter(n__gt=1).exists()
        for saga in getattr(self, "sagas", []):
            kinds = sorted(Payment.objects.filter(order_id=saga.order_id).values_list("kind", flat=True))
            if "refund" in kinds:
                assert "charge" in kinds
            if saga.has("OrderCancelled") and not saga.charged:
                assert kinds == [], saga  # a charge arriving after the cancellation is refused
            if saga.charged and (saga.has("OrderCancelled") or saga.has("ShipmentFailed")):
                assert kinds == ["charge", "refund"], (saga, kinds)


@pytest.mark.django_db
def test_payment_handlers_keep_money_invariants_under_any_interleaving() -> None:
    PaymentMachine.run()
