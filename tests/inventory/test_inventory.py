from __future__ import annotations

import uuid
from decimal import Decimal

import pytest
from django.db import transaction

from common.messaging.consumer import Disposition
from common.messaging.contracts import latest_version, validate_payload
from common.messaging.envelope import Envelope
from inventory_svc.inventory import services
from inventory_svc.inventory.models import Product, Reservation
from tests.events import deliver, envelope, outbox_events, outbox_types
from tests.unavailable import ENDPOINTS, assert_every_endpoint_listed, assert_unavailable

pytestmark = pytest.mark.django_db


def placed(order_id: str, items: list[tuple[str, int]], customer: str = "alice"):
    return envelope(
        "OrderPlaced",
        order_id,
        {
            "customer_id": customer,
            "items": [{"sku": sku, "quantity": q} for sku, q in items],
            "shipping_address": {"country": "FR"},
        },
        producer="order",
    )


@pytest.fixture
def stock() -> dict[str, Product]:
    return {
        sku: services.product_create(sku=sku, name=sku, price=Decimal(price), available=available)
        for sku, price, available in [("b-bolt", "0.25", 10), ("a-anvil", "99.99", 2)]
    }


def conserved(sku: str) -> None:
    product = Product.objects.get(sku=sku)
    deducted = sum(r.quantity for r in Reservation.objects.filter(product=product, status="DEDUCTED"))
    assert product.available >= 0
    assert product.reserved >= 0
    assert product.received == product.available + product.reserved + deducted


def handled_once(event: Envelope) -> None:
    """Delivered twice (at-least-once): handled, then absorbed by the inbox."""
    assert deliver(event).disposition is Disposition.HANDLED
    assert deliver(event).disposition is Disposition.DUPLICATE


def bolt_ends(order_id: str, *, available: int, reserved: int, emitted: list[str]) -> None:
    bolt = Product.objects.get(sku="b-bolt")
    assert (bolt.available, bolt.reserved) == (available, reserved)
    assert outbox_types(order_id) == emitted
    conserved("b-bolt")


def test_reserve_prices_every_line_in_sku_order(stock) -> None:
    order_id = str(uuid.uuid4())
    assert deliver(placed(order_id, [("b-bolt", 4), ("a-anvil", 1)])).disposition is Disposition.HANDLED
    [event] = outbox_events(order_id)
    assert event["event_type"] == "InventoryReserved"
    assert event["payload"] == {
        "customer_id": "alice",
        "total": "100.99",
        "lines": [
            {"sku": "a-anvil", "quantity": 1, "unit_price": "99.99"},
            {"sku": "b-bolt", "quantity": 4, "unit_price": "0.25"},
        ],
        # The address travels on, to Payment and then Shipping (SPEC §2: fewer hops).
        "shipping_address": {"country": "FR"},
    }
    assert event["schema_version"] == latest_version("InventoryReserved") == 2
    validate_payload("InventoryReserved", 2, event["payload"])
    bolt = Product.objects.get(sku="b-bolt")
    assert (bolt.available, bolt.reserved, bolt.version) == (6, 4, 2)
    conserved("b-bolt")


@pytest.mark.parametrize(
    ("items", "code"),
    [([("a-anvil", 3)], "out_of_stock"), ([("a-anvil", 1), ("zz-nothing", 1)], "unknown_sku")],
)
def test_reject_reserves_nothing(stock, items, code) -> None:
    order_id = str(uuid.uuid4())
    deliver(placed(order_id, items))
    [event] = outbox_events(order_id)
    assert event["event_type"] == "InventoryRejected"
    assert event["payload"]["code"] == code
    validate_payload("InventoryRejected", 1, event["payload"])
    assert not Reservation.objects.filter(order_id=order_id).exists()
    assert Product.objects.get(sku="a-anvil").available == 2


def test_an_order_whose_total_no_money_field_holds_is_rejected_not_retried() -> None:
    # Within the API's limits line by line (a 10-digit price, 10 000 units, 100 lines), the
    # total can pass 12 digits: no charge, refund or order total could carry it.
    services.product_create(sku="gold", name="gold", price=Decimal("9999999999.99"), available=10_000)
    order_id = str(uuid.uuid4())
    assert deliver(placed(order_id, [("gold", 101)])).disposition is Disposition.HANDLED
    [event] = outbox_events(order_id)
    assert event["event_type"] == "InventoryRejected"
    assert event["payload"]["code"] == "total_too_large"
    assert "1009999999998.99" in event["payload"]["reason"]
    validate_payload("InventoryRejected", 1, event["payload"])
    gold = Product.objects.get(sku="gold")
    assert (gold.available, gold.reserved) == (10_000, 0)
    # The largest total that fits is still reserved.
    fits = str(uuid.uuid4())
    services.product_create(sku="silver", name="silver", price=Decimal("9999999999.99"), available=100)
    deliver(placed(fits, [("silver", 100)]))
    [event] = outbox_events(fits)
    assert (event["event_type"], event["payload"]["total"]) == ("InventoryReserved", "999999999999.00")


def test_release_then_duplicate_release_has_one_effect(stock) -> None:
    order_id = str(uuid.uuid4())
    deliver(placed(order_id, [("b-bolt", 3)]))
    declined = envelope(
        "PaymentDeclined",
        order_id,
        {"customer_id": "alice", "code": "insufficient_funds", "reason": "no money", "amount": "0.75"},
    )
    handled_once(declined)
    # A second, different compensation request for the same order: no second effect either.
    handled_once(envelope("ShipmentFailed", order_id, {"code": "country_not_served", "reason": "AQ"}))
    bolt_ends(order_id, available=10, reserved=0, emitted=["InventoryReserved", "InventoryReleased"])


def test_deduct_on_completion(stock) -> None:
    order_id = str(uuid.uuid4())
    deliver(placed(order_id, [("b-bolt", 3)]))
    handled_once(envelope("OrderCompleted", order_id, {}, producer="order"))
    bolt_ends(order_id, available=7, reserved=0, emitted=["InventoryReserved", "InventoryDeducted"])


def test_duplicate_order_placed_reserves_once(stock) -> None:
    order_id = str(uuid.uuid4())
    handled_once(placed(order_id, [("b-bolt", 2)]))
    bolt_ends(order_id, available=8, reserved=2, emitted=["InventoryReserved"])


def test_version_conflicts_are_retried_then_handed_to_the_tiers(stock, settings, monkeypatch) -> None:
    """A conflict on every attempt must end in OccRetriesExhausted (→ retry tier), not a loop."""
    settings.SAGA_OCC_MAX_ATTEMPTS = 3
    calls = []
    real_apply = services._apply

    def always_conflict(changes):
        calls.append([product.sku for product, _, _ in changes])
        raise services.VersionConflict("b-bolt")

    monkeypatch.setattr(services, "_apply", always_conflict)
    outcome = deliver(placed(str(uuid.uuid4()), [("b-bolt", 1)]))
    assert outcome.disposition is Disposition.RETRY
    assert "OccRetriesExhausted" in outcome.reason
    assert len(calls) == 3
    monkeypatch.setattr(services, "_apply", real_apply)
    assert Product.objects.get(sku="b-bolt").available == 10


def test_a_stale_version_matches_no_row(stock) -> None:
    stale = Product.objects.get(sku="b-bolt")
    services._apply([(Product.objects.get(sku="b-bolt"), -1, 1)])
    with pytest.raises(services.VersionConflict):
        services._apply([(stale, -1, 1)])


def test_one_stale_version_among_several_changes_none(stock) -> None:
    """All the lines of a step in one UPDATE: one moved version fails the step, and the
    savepoint around it (``_with_occ``) undoes the lines that did match."""
    anvil, stale_bolt = Product.objects.get(sku="a-anvil"), Product.objects.get(sku="b-bolt")
    services._apply([(Product.objects.get(sku="b-bolt"), -1, 1)])
    with pytest.raises(services.VersionConflict), transaction.atomic():
        services._apply([(anvil, -2, 2), (stale_bolt, -1, 1)])
    assert Product.objects.get(sku="a-anvil").available == anvil.available
    assert Product.objects.get(sku="b-bolt").available == stale_bolt.available - 1


def test_several_changes_apply_together(stock) -> None:
    anvil, bolt = Product.objects.get(sku="a-anvil"), Product.objects.get(sku="b-bolt")
    services._apply([(bolt, -3, 3), (anvil, -1, 1)])  # any order: the statement locks in sku order
    after = {p.sku: p for p in Product.objects.filter(sku__in=["a-anvil", "b-bolt"])}
    assert (after["a-anvil"].available, after["a-anvil"].reserved) == (
        anvil.available - 1,
        anvil.reserved + 1,
    )
    assert (after["b-bolt"].available, after["b-bolt"].reserved) == (bolt.available - 3, bolt.reserved + 3)
    assert after["a-anvil"].version == anvil.version + 1
    assert after["b-bolt"].version == bolt.version + 1


def test_rejecting_a_hundred_unknown_skus_keeps_the_reason_short(stock) -> None:
    order_id = str(uuid.uuid4())
    assert deliver(placed(order_id, [(f"s{i}", 1) for i in range(100)])).disposition is Disposition.HANDLED
    [event] = outbox_events(order_id)
    validate_payload("InventoryRejected", 1, event["payload"])
    assert len(event["payload"]["skus"]) == 100
    assert event["payload"]["reason"].endswith("and 90 more")


def cancelled(order_id: str):
    return envelope("OrderCancelled", order_id, {"reason": "client"}, producer="order")


def test_cancel_before_the_order_arrives_refuses_the_late_reservation(stock) -> None:
    order_id = str(uuid.uuid4())
    assert deliver(cancelled(order_id)).disposition is Disposition.HANDLED
    assert deliver(placed(order_id, [("b-bolt", 2)])).disposition is Disposition.HANDLED
    assert not Reservation.objects.filter(order_id=order_id).exists()
    assert Product.objects.get(sku="b-bolt").available == 10
    assert [(e["event_type"], e["payload"]) for e in outbox_events(order_id)] == [
        ("InventoryReleased", {"lines": []})
    ]


def test_cancel_after_reserving_releases_once_whatever_else_asks(stock) -> None:
    order_id = str(uuid.uuid4())
    deliver(placed(order_id, [("b-bolt", 2), ("a-anvil", 1)]))
    deliver(cancelled(order_id))
    deliver(cancelled(order_id))  # another cancellation message for the same order
    deliver(
        envelope(
            "PaymentDeclined",
            order_id,
            {"customer_id": "alice", "code": "insufficient_funds", "reason": "late"},
        )
    )
    assert (Product.objects.get(sku="b-bolt").available, Product.objects.get(sku="a-anvil").available) == (
        10,
        2,
    )
    events = outbox_events(order_id)
    assert [e["event_type"] for e in events] == [
        "InventoryReserved",
        "InventoryReleased",
        "InventoryReleased",
    ]
    assert events[1]["payload"]["lines"] == [
        {"sku": "a-anvil", "quantity": 1},
        {"sku": "b-bolt", "quantity": 2},
    ]
    assert events[2]["payload"]["lines"] == []
    conserved("b-bolt")
    conserved("a-anvil")


def test_a_reservation_is_released_or_deducted_once_and_for_good():
    from common.errors import IllegalTransition

    for to in ("RELEASED", "DEDUCTED"):
        Reservation.require(order_id="o1", current="RESERVED", to=to)
    for current in ("RELEASED", "DEDUCTED"):
        for to in ("RESERVED", "RELEASED", "DEDUCTED"):
            with pytest.raises(IllegalTransition, match=f"of order o1: cannot go from {current} to {to}"):
                Reservation.require(order_id="o1", current=current, to=to)


@pytest.mark.django_db(transaction=True)
def test_every_endpoint_answers_503_while_the_database_is_away() -> None:
    assert_every_endpoint_listed("inventory")
    assert_unavailable(ENDPOINTS["inventory"])
