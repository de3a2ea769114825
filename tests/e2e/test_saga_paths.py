"""Every saga path of SPEC §2 (except timeouts), driven over HTTP with every process running."""

from __future__ import annotations

import json
import os
import uuid
from decimal import Decimal

import pytest

from tests.support import (
    COMPLETED_STEPS,
    SHIPPING_FAILED_STEPS,
    Api,
    ctl,
    faults,
    manage,
    poll,
    publish,
    reserved_again,
    wait_invariants,
)

BROKER = os.environ.get("SAGA_BROKER_URL", "amqp://saga:saga@127.0.0.1:5672/saga")
PATHS = [
    # title, balance, stock, quantity, sku known, customer known, country, status, steps
    (
        "success",
        "100.00",
        10,
        2,
        True,
        True,
        "FR",
        "COMPLETED",
        COMPLETED_STEPS,
    ),
    ("out of stock", "100.00", 1, 2, True, True, "FR", "REJECTED", ["OrderPlaced", "InventoryRejected"]),
    ("unknown sku", "100.00", 10, 1, False, True, "FR", "REJECTED", ["OrderPlaced", "InventoryRejected"]),
    (
        "insufficient funds",
        "1.00",
        10,
        2,
        True,
        True,
        "FR",
        "CANCELLED",
        ["OrderPlaced", "InventoryReserved", "PaymentDeclined", "InventoryReleased"],
    ),
    (
        "unknown customer",
        "100.00",
        10,
        2,
        True,
        False,
        "FR",
        "CANCELLED",
        ["OrderPlaced", "InventoryReserved", "PaymentDeclined", "InventoryReleased"],
    ),
    (
        "unserved country",
        "100.00",
        10,
        2,
        True,
        True,
        "AQ",
        "CANCELLED",
        SHIPPING_FAILED_STEPS,
    ),
]


@pytest.mark.parametrize(
    ("title", "balance", "stock", "quantity", "sku_known", "customer_known", "country", "status", "steps"),
    PATHS,
    ids=[p[0] for p in PATHS],
)
def test_saga_path(
    api: Api, title, balance, stock, quantity, sku_known, customer_known, country, status, steps
) -> None:
    sku = api.product(price="5.00", available=stock)
    customer = api.account(balance=balance)
    order = api.place(
        customer if customer_known else f"ghost-{uuid.uuid4().hex[:8]}",
        [(sku if sku_known else f"ghost-{uuid.uuid4().hex[:8]}", quantity)],
        country,
    )
    assert order["status"] == "PENDING"
    final = api.wait_terminal(order["id"])
    assert final["status"] == status, final
    seen = [step["event_type"] for step in final["timeline"]]
    # Compensations may arrive in either order; every expected step is there exactly once.
    assert sorted(seen[: len(steps)]) == sorted(steps), seen
    assert seen[:2] == steps[:2]
    assert [step["at"] for step in final["timeline"]] == sorted(step["at"] for step in final["timeline"])
    if status != "COMPLETED":
        assert final["failure_reason"]
    wait_invariants(api, order["id"])  # SPEC §5, once the last effects landed
    product = api.stock(sku)
    sold = quantity if status == "COMPLETED" else 0
    assert (product["available"], product["reserved"]) == (stock - sold, 0)
    if customer_known:
        spent = Decimal("5.00") * quantity if status == "COMPLETED" else Decimal(0)
        assert api.balance(customer) == Decimal(balance) - spent


def test_a_duplicate_event_on_the_broker_has_no_second_effect(api: Api) -> None:
    sku = api.product(price="3.00", available=5)
    customer = api.account(balance="50.00")
    order = api.wait_terminal(api.place(customer, [(sku, 2)])["id"])
    assert order["status"] == "COMPLETED"
    publish("inventory.reserved", reserved_again(order, customer), signed_by="inventory")
    # A later order through the same payment queue completes only after the copy was handled.
    later = api.wait_terminal(api.place(customer, [(sku, 1)])["id"])
    assert later["status"] == "COMPLETED"
    assert api.balance(customer) == Decimal("41.00")
    assert [p["kind"] for p in api.payments(order["id"])] == ["charge"]
    assert len(api.shipments(order["id"])) == 1


def test_relay_down_between_commit_and_publish_loses_nothing(api: Api) -> None:
    sku = api.product(available=5)
    customer = api.account()
    ctl("stop", "order-relay")
    try:
        # The web process "dies" between its commit and its publish (the fault stands in for
        # that): the event is only in the outbox, and the relay that would sweep it is down.
        with faults("order/outbox.after_commit=raise"):
            order = api.place(customer, [(sku, 1)])
        # Committed, not published: nothing downstream moves while the relay is down.
        for _ in range(10):
            assert api.order(order["id"])["status"] == "PENDING"
            assert api.stock(sku)["available"] == 5
    finally:
        ctl("start", "order-relay")
    assert api.wait_terminal(order["id"])["status"] == "COMPLETED"
    wait_invariants(api, order["id"])


def test_garbage_on_a_service_queue_is_parked_and_the_worker_keeps_working(api: Api) -> None:
    marker = uuid.uuid4().hex
    publish("inventory.events", b"\x00not json " + marker.encode(), exchange="")
    publish("inventory.events", json.dumps({"event_id": marker}), exchange="")
    found = poll(
        lambda: [m for m in all_parked("inventory") if marker in m["body"]],
        lambda found: len(found) == 2,
        timeout=15,
        what="both messages in the parking lot",
    )
    assert all(m["reason"].startswith("malformed event") for m in found), found
    assert all(m["status"] == "PARKED" for m in found)
    # An operator discards what can never be handled; the record stays, with who and why.
    manage(
        "inventory",
        "parked",
        "discard",
        *[str(m["id"]) for m in found],
        "--operator",
        "e2e-test",
        "--note",
        "garbage published by the test",
    )
    assert {m["status"] for m in all_parked_every("inventory") if marker in m["body"]} == {"DISCARDED"}
    sku = api.product(available=1)
    order = api.place(api.account(), [(sku, 1)])
    assert api.wait_terminal(order["id"])["status"] == "COMPLETED"


def all_parked(service: str) -> list[dict]:
    return json.loads(manage(service, "parked", "list", "--json"))


def all_parked_every(service: str) -> list[dict]:
    return json.loads(manage(service, "parked", "list", "--all", "--json"))
