from __future__ import annotations

import uuid

import pytest

from common.messaging.consumer import Disposition
from common.messaging.contracts import validate_payload
from shipping_svc.shipping.models import Shipment
from tests.events import deliver, envelope, outbox_events, outbox_types
from tests.unavailable import ENDPOINTS, assert_every_endpoint_listed, assert_unavailable

pytestmark = pytest.mark.django_db


def placed(order_id: str, country: str):
    return envelope(
        "OrderPlaced",
        order_id,
        {
            "customer_id": "c",
            "items": [{"sku": "a", "quantity": 1}],
            "shipping_address": {"country": country, "city": "Paris"},
        },
        producer="order",
    )


def paid(order_id: str, version: int = 3, country: str | None = "FR"):
    """PaymentCompleted; from v3 on it carries the order's shipping address."""
    payload = {"customer_id": "c", "amount": "1.00"}
    if version >= 2:
        payload["payment_id"] = str(uuid.uuid4())
    if version >= 3 and country is not None:
        payload["shipping_address"] = {"country": country, "city": "Paris"}
    return envelope("PaymentCompleted", order_id, payload, producer="payment", schema_version=version)


def test_the_destination_travels_with_payment_completed() -> None:
    """Shipping's queue no longer takes OrderPlaced: the address comes with PaymentCompleted."""
    from shipping_svc.shipping.handlers import registry

    assert "order.placed" not in registry.routing_keys
    assert registry.retired_routing_keys == ["order.placed"]
    order_id = str(uuid.uuid4())
    assert deliver(paid(order_id, country="FR")).disposition is Disposition.HANDLED
    assert Shipment.objects.get(order_id=order_id).country == "FR"


@pytest.mark.parametrize("version", [1, 2])
def test_a_payment_completed_from_before_the_upgrade_uses_the_recorded_destination(version: int) -> None:
    """Services deploy one at a time: an older payment service still emits v1 or v2 (no
    address); an OrderPlaced already queued for shipping still records the destination."""
    order_id = str(uuid.uuid4())
    assert deliver(placed(order_id, "DE")).disposition is Disposition.HANDLED
    assert deliver(paid(order_id, version)).disposition is Disposition.HANDLED
    assert Shipment.objects.get(order_id=order_id).country == "DE"


def test_an_unknown_schema_version_is_parked_not_guessed() -> None:
    order_id = str(uuid.uuid4())
    outcome = deliver(paid(order_id, 4))
    assert outcome.disposition is Disposition.PARK
    assert "no contract for PaymentCompleted schema_version 4" in outcome.reason
    assert not Shipment.objects.filter(order_id=order_id).exists()


def test_schedules_once_for_a_served_country() -> None:
    order_id = str(uuid.uuid4())
    payment = paid(order_id)
    assert deliver(payment).disposition is Disposition.HANDLED
    assert deliver(payment).disposition is Disposition.DUPLICATE
    deliver(paid(order_id))
    assert Shipment.objects.filter(order_id=order_id, status="SCHEDULED").count() == 1
    assert outbox_types(order_id) == ["ShipmentScheduled"]
    validate_payload("ShipmentScheduled", 1, outbox_events(order_id)[0]["payload"])


def test_unserved_country_fails_without_a_shipment() -> None:
    order_id = str(uuid.uuid4())
    deliver(paid(order_id, country="AQ"))
    assert not Shipment.objects.filter(order_id=order_id).exists()
    [event] = outbox_events(order_id)
    assert event["event_type"] == "ShipmentFailed"
    validate_payload("ShipmentFailed", 1, event["payload"])


def test_served_set_is_configurable(settings) -> None:
    settings.SHIPPING_SERVED_COUNTRIES = ["DE"]
    order_id = str(uuid.uuid4())
    deliver(paid(order_id, country="FR"))
    assert outbox_types(order_id) == ["ShipmentFailed"]


def test_an_addressless_payment_before_its_destination_is_retried() -> None:
    order_id = str(uuid.uuid4())
    outcome = deliver(paid(order_id, version=2))
    assert outcome.disposition is Disposition.RETRY
    assert "DestinationUnknown" in outcome.reason
    deliver(placed(order_id, "FR"))
    assert deliver(paid(order_id, version=2)).disposition is Disposition.HANDLED
    assert outbox_types(order_id) == ["ShipmentScheduled"]


def cancelled(order_id: str):
    return envelope("OrderCancelled", order_id, {"reason": "client"}, producer="order")


def test_cancel_before_payment_refuses_the_late_shipment() -> None:
    order_id = str(uuid.uuid4())
    deliver(cancelled(order_id))
    deliver(paid(order_id))
    assert not Shipment.objects.filter(order_id=order_id).exists()
    assert [(e["event_type"], e["payload"]) for e in outbox_events(order_id)] == [
        ("ShipmentCancelled", {"shipment_id": None})
    ]


def test_cancel_after_scheduling_cancels_the_shipment() -> None:
    order_id = str(uuid.uuid4())
    deliver(paid(order_id))
    deliver(cancelled(order_id))
    shipment = Shipment.objects.get(order_id=order_id)
    assert shipment.status == "CANCELLED"
    assert outbox_types(order_id) == ["ShipmentScheduled", "ShipmentCancelled"]
    assert outbox_events(order_id)[1]["payload"] == {"shipment_id": str(shipment.id)}


def test_a_shipment_moves_only_from_scheduled_to_cancelled():
    from common.errors import IllegalTransition

    Shipment.require(order_id="o1", current="SCHEDULED", to="CANCELLED")
    for current, to in [("CANCELLED", "SCHEDULED"), ("CANCELLED", "CANCELLED"), ("SCHEDULED", "SCHEDULED")]:
        with pytest.raises(
            IllegalTransition, match=f"shipment of order o1: cannot go from {current} to {to}"
        ):
            Shipment.require(order_id="o1", current=current, to=to)


@pytest.mark.django_db(transaction=True)
def test_every_endpoint_answers_503_while_the_database_is_away() -> None:
    assert_every_endpoint_listed("shipping")
    assert_unavailable(ENDPOINTS["shipping"])
