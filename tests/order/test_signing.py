"""Event authenticity (common/messaging/signing.py): only events signed by a producer allowed to emit
their type are handled; everything else is parked with the reason, and changes nothing."""

from __future__ import annotations

import uuid

import pytest

from common.messaging.consumer import Disposition, process_delivery
from common.messaging.envelope import EnvelopeError
from common.messaging.outbox import emit
from common.messaging.signing import signature_of
from order_svc.orders.handlers import registry
from order_svc.orders.models import Order, OrderStatus, SagaEvent
from tests.events import envelope, signed_as

pytestmark = pytest.mark.django_db


def place() -> Order:
    from order_svc.orders import services

    order, _ = services.order_place(
        customer_id="alice",
        items=[{"sku": "a-anvil", "quantity": 1}],
        shipping_address={"country": "FR"},
    )
    return order


def rejected(order_id: str, producer: str | None = None):
    payload = {"code": "out_of_stock", "reason": "forged: out of stock", "skus": ["a-anvil"]}
    return envelope("InventoryRejected", order_id, payload, producer=producer)


def consume(body: bytes, signature: object):
    return process_delivery(body, events=registry, service="order", signature=signature)


def untouched(order_id: str) -> bool:
    order = Order.objects.get(id=order_id)
    return (
        order.status == OrderStatus.PENDING
        and not SagaEvent.objects.filter(order_id=order_id, event_type="InventoryRejected").exists()
    )


@pytest.mark.parametrize(
    ("attack", "reason"),
    [
        ("unsigned", "unsigned event: no x-saga-signature header"),
        ("attacker's key", "bad signature: the body was not signed with producer 'inventory'"),
        ("signature of another body", "bad signature"),
        ("another producer's key", "bad signature"),
        ("not a string", "unsigned event"),
    ],
)
def test_an_event_without_its_producers_signature_is_parked_and_changes_nothing(attack, reason) -> None:
    order_id = str(place().id)
    body = rejected(order_id).to_json().encode()
    signature = {
        "unsigned": None,
        "attacker's key": signature_of(body, b"an attacker's guess of the key"),
        "signature of another body": signed_as(rejected(order_id).to_json().encode()),
        "another producer's key": signed_as(body, producer="payment"),
        "not a string": 42,
    }[attack]
    outcome = consume(body, signature)
    assert outcome.disposition is Disposition.PARK
    assert outcome.reason.startswith("untrusted event: " + reason), outcome.reason
    assert untouched(order_id)


def test_a_signed_event_from_a_producer_not_allowed_to_emit_it_is_parked() -> None:
    """A compromised payment service, signing with its own key, cannot reject stock."""
    order_id = str(place().id)
    body = rejected(order_id, producer="payment").to_json().encode()
    outcome = consume(body, signed_as(body, producer="payment"))
    assert outcome.disposition is Disposition.PARK
    assert outcome.reason == (
        "untrusted event: producer 'payment' may not emit InventoryRejected (only inventory)"
    )
    assert untouched(order_id)


def test_a_producer_unknown_to_this_service_is_parked() -> None:
    order_id = str(place().id)
    body = rejected(order_id, producer="mallory").to_json().encode()
    outcome = consume(body, signature_of(body, b"mallory's own key"))
    assert outcome.disposition is Disposition.PARK
    assert "no key to verify events from producer 'mallory'" in outcome.reason
    assert untouched(order_id)


def test_the_genuine_event_is_handled(settings) -> None:
    order_id = str(place().id)
    body = rejected(order_id).to_json().encode()
    assert consume(body, signed_as(body)).disposition is Disposition.HANDLED
    assert Order.objects.get(id=order_id).status == OrderStatus.REJECTED


def test_key_rotation_accepts_the_old_key_and_the_new_one(settings) -> None:
    old = settings.SAGA_EVENT_KEYS["inventory"][0]
    settings.SAGA_EVENT_KEYS = {**settings.SAGA_EVENT_KEYS, "inventory": [b"the new inventory key", old]}
    for key in (old, b"the new inventory key"):
        order_id = str(place().id)
        body = rejected(order_id).to_json().encode()
        assert consume(body, signature_of(body, key)).disposition is Disposition.HANDLED
    order_id = str(place().id)
    body = rejected(order_id).to_json().encode()
    assert consume(body, signature_of(body, b"a retired key")).disposition is Disposition.PARK


def test_a_service_cannot_emit_an_event_type_it_does_not_own() -> None:
    from django.db import transaction

    with transaction.atomic(), pytest.raises(EnvelopeError, match="order may not emit PaymentCompleted"):
        emit(event_type="PaymentCompleted", saga_id=str(uuid.uuid4()), payload={})
