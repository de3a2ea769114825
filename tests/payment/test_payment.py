from __future__ import annotations

import uuid
from decimal import Decimal

import pytest

from common.messaging.consumer import Disposition
from common.messaging.contracts import latest_version, validate_payload
from payment_svc.payments import services
from payment_svc.payments.models import Account, Payment
from tests.events import deliver, envelope, outbox_events, outbox_types
from tests.unavailable import ENDPOINTS, assert_every_endpoint_listed, assert_unavailable

pytestmark = pytest.mark.django_db


ADDRESS = {"country": "FR", "city": "Paris"}


def reserved(order_id: str, customer: str = "alice", total: str = "30.00", version: int = 2):
    payload = {
        "customer_id": customer,
        "total": total,
        "lines": [{"sku": "a", "quantity": 1, "unit_price": total}],
    }
    if version >= 2:
        payload["shipping_address"] = ADDRESS
    return envelope("InventoryReserved", order_id, payload, producer="inventory", schema_version=version)


def shipment_failed(order_id: str):
    return envelope(
        "ShipmentFailed", order_id, {"code": "country_not_served", "reason": "AQ"}, producer="shipping"
    )


@pytest.fixture
def alice() -> Account:
    return services.account_create(customer_id="alice", balance=Decimal("50.00"))


def conserved(customer: str) -> None:
    account = Account.objects.get(customer_id=customer)
    charges = sum(p.amount for p in Payment.objects.filter(customer_id=customer, kind="charge"))
    refunds = sum(p.amount for p in Payment.objects.filter(customer_id=customer, kind="refund"))
    assert account.balance >= 0
    assert account.opening_balance == account.balance + charges - refunds


def test_charge_once_even_when_delivered_twice(alice) -> None:
    order_id = str(uuid.uuid4())
    event = reserved(order_id)
    assert deliver(event).disposition is Disposition.HANDLED
    assert deliver(event).disposition is Disposition.DUPLICATE
    # Even a different event asking again for the same order charges nothing more.
    assert deliver(reserved(order_id)).disposition is Disposition.HANDLED
    assert Account.objects.get(customer_id="alice").balance == Decimal("20.00")
    assert outbox_types(order_id) == ["PaymentCompleted"]
    [completed] = outbox_events(order_id)
    # Emitted as the latest version of its contract (v2 names the charge, v3 carries the
    # shipping address on to Shipping).
    assert completed["schema_version"] == latest_version("PaymentCompleted") == 3
    validate_payload("PaymentCompleted", 3, completed["payload"])
    [charge] = Payment.objects.filter(order_id=order_id, kind="charge")
    assert completed["payload"]["payment_id"] == str(charge.id)
    assert completed["payload"]["shipping_address"] == ADDRESS
    conserved("alice")


def test_an_inventory_reserved_from_before_the_upgrade_still_charges(alice) -> None:
    """v1 carries no address: PaymentCompleted goes without one (Shipping then uses the
    destination it recorded from OrderPlaced)."""
    order_id = str(uuid.uuid4())
    assert deliver(reserved(order_id, version=1)).disposition is Disposition.HANDLED
    [completed] = outbox_events(order_id)
    assert completed["event_type"] == "PaymentCompleted"
    assert "shipping_address" not in completed["payload"]
    validate_payload("PaymentCompleted", 3, completed["payload"])


@pytest.mark.parametrize(
    ("customer", "total", "code"),
    [("alice", "50.01", "insufficient_funds"), ("nobody", "1.00", "unknown_customer")],
)
def test_declines_move_no_money(alice, customer, total, code) -> None:
    order_id = str(uuid.uuid4())
    deliver(reserved(order_id, customer, total))
    [event] = outbox_events(order_id)
    assert (event["event_type"], event["payload"]["code"]) == ("PaymentDeclined", code)
    validate_payload("PaymentDeclined", 1, event["payload"])
    assert not Payment.objects.filter(order_id=order_id).exists()
    assert Account.objects.get(customer_id="alice").balance == Decimal("50.00")


def test_refund_once_after_shipment_failure(alice) -> None:
    order_id = str(uuid.uuid4())
    deliver(reserved(order_id))
    failed = shipment_failed(order_id)
    assert deliver(failed).disposition is Disposition.HANDLED
    assert deliver(failed).disposition is Disposition.DUPLICATE
    deliver(shipment_failed(order_id))
    assert Account.objects.get(customer_id="alice").balance == Decimal("50.00")
    assert outbox_types(order_id) == ["PaymentCompleted", "PaymentRefunded"]
    validate_payload("PaymentRefunded", 1, outbox_events(order_id)[1]["payload"])
    conserved("alice")


def test_exact_balance_can_be_spent_and_never_overdrawn(alice) -> None:
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    deliver(reserved(first, total="50.00"))
    deliver(reserved(second, total="0.01"))
    assert outbox_types(first) == ["PaymentCompleted"]
    assert outbox_types(second) == ["PaymentDeclined"]
    assert Account.objects.get(customer_id="alice").balance == Decimal("0.00")


def cancelled(order_id: str):
    return envelope("OrderCancelled", order_id, {"reason": "client"}, producer="order")


def test_cancel_before_the_charge_refuses_it(alice) -> None:
    order_id = str(uuid.uuid4())
    deliver(cancelled(order_id))
    deliver(reserved(order_id))
    assert not Payment.objects.filter(order_id=order_id).exists()
    assert Account.objects.get(customer_id="alice").balance == Decimal("50.00")
    assert [(e["event_type"], e["payload"]) for e in outbox_events(order_id)] == [
        ("PaymentRefunded", {"amount": "0.00"})
    ]


def test_cancel_and_shipment_failure_refund_once(alice) -> None:
    order_id = str(uuid.uuid4())
    deliver(reserved(order_id))
    deliver(shipment_failed(order_id))
    deliver(cancelled(order_id))
    assert Account.objects.get(customer_id="alice").balance == Decimal("50.00")
    assert Payment.objects.filter(order_id=order_id, kind="refund").count() == 1
    amounts = [
        e["payload"]["amount"] for e in outbox_events(order_id) if e["event_type"] == "PaymentRefunded"
    ]
    assert amounts == ["30.00", "0.00"]
    conserved("alice")


@pytest.mark.django_db(transaction=True)
def test_every_endpoint_answers_503_while_the_database_is_away() -> None:
    assert_every_endpoint_listed("payment")
    assert_unavailable(ENDPOINTS["payment"])
