"""Failures never lose or strand a saga (issue 3): cancellation, deadlines, retry tiers,
the parking lot, and crashes of real processes, each followed by SPEC §5 checks."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import pytest

from tests.support import (
    DEADLINE_SECONDS,
    RETRY_DELAYS,
    Api,
    clear_faults,
    ctl,
    faults,
    manage,
    parked,
    pid,
    poll,
    queue_depth,
    rabbitmqctl,
    terminate_db_connections,
    wait_invariants,
)

TIERS_SECONDS = sum(RETRY_DELAYS)


@pytest.fixture(autouse=True)
def no_faults_left_behind():
    clear_faults()
    yield
    clear_faults()


@pytest.fixture
def stopped():
    """Stop supervisor programs for the test; they are always started again."""
    names: list[str] = []

    def stop(*programs: str) -> None:
        ctl("stop", *programs)
        names.extend(programs)

    yield stop
    if names:
        ctl("start", *names)


def place_many(count: int, *, sku: str, customer: str, country: str = "FR") -> list[str]:
    def one(_: int) -> str:
        return Api().place(customer, [(sku, 1)], country)["id"]

    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(one, range(count)))


def settle(api: Api, order_ids: list[str], timeout: float = 60.0) -> list[dict]:
    """Wait for every order to be terminal and check SPEC §5 on each."""
    for order_id in order_ids:
        api.wait_terminal(order_id, timeout=timeout)
    return [wait_invariants(api, order_id) for order_id in order_ids]


def stock_conserved(api: Api, sku: str, initial: int, completed: int) -> None:
    """available + reserved + deducted = initial, with nothing reserved once quiet."""
    poll(lambda: api.stock(sku), lambda s: s["reserved"] == 0, timeout=20, what=f"{sku} quiet")
    assert api.stock(sku)["available"] == initial - completed


# -- cancellation -------------------------------------------------------------------
def test_client_cancels_a_pending_order_and_every_step_is_undone(api: Api, stopped) -> None:
    sku, customer = api.product(price="4.00", available=3), api.account(balance="20.00")
    stopped("shipping-worker")  # the saga stops after the charge
    order = api.place(customer, [(sku, 2)])
    poll(lambda: api.payments(order["id"]), lambda p: len(p) == 1, timeout=15, what="the charge")
    response = api.post("order", f"/api/orders/{order['id']}/cancel/", json={"reason": "changed my mind"})
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "COMPENSATING"
    again = api.post("order", f"/api/orders/{order['id']}/cancel/")
    assert again.status_code == 409
    assert "only a PENDING order" in again.json()["message"]
    ctl("start", "shipping-worker")
    final = api.wait_terminal(order["id"])
    assert (final["status"], final["failure_reason"]) == ("CANCELLED", "changed my mind")
    steps = [s["event_type"] for s in final["timeline"]]
    for step in ("OrderCancelled", "InventoryReleased", "PaymentRefunded", "ShipmentCancelled"):
        assert step in steps, steps
    wait_invariants(api, final["id"])
    assert api.balance(customer) == Decimal("20.00")
    assert api.stock(sku)["available"] == 3


def wait_restarted(program: str, before: int) -> None:
    """Until ``program`` (SIGKILLed by a fault) runs again under a new pid."""
    poll(
        lambda: pid(program),
        lambda now: now not in (0, before),
        timeout=20,
        what=f"{program} to be SIGKILLed and restarted",
    )


def test_cancel_is_refused_once_terminal_and_404_for_an_unknown_order(api: Api) -> None:
    order = api.wait_terminal(api.place(api.account(), [(api.product(), 1)])["id"])
    assert order["status"] == "COMPLETED"
    response = api.post("order", f"/api/orders/{order['id']}/cancel/")
    assert response.status_code == 409
    assert "is COMPLETED" in response.json()["message"]
    unknown = api.post("order", "/api/orders/00000000-0000-0000-0000-000000000000/cancel/")
    assert unknown.status_code == 404


def test_an_order_past_its_deadline_is_cancelled_and_compensated(api: Api, stopped) -> None:
    sku, customer = api.product(price="5.00", available=2), api.account(balance="50.00")
    stopped("shipping-worker")
    order = api.place(customer, [(sku, 1)])
    compensating = poll(
        lambda: api.order(order["id"]),
        lambda o: o["status"] != "PENDING",
        timeout=DEADLINE_SECONDS + 15,
        what="the deadline sweep",
    )
    assert compensating["status"] == "COMPENSATING"
    assert "deadline passed" in compensating["failure_reason"]
    ctl("start", "shipping-worker")
    final = settle(api, [order["id"]])[0]
    assert final["status"] == "CANCELLED"
    assert api.balance(customer) == Decimal("50.00")
    assert api.stock(sku)["available"] == 2
    # Shipping saw PaymentCompleted before OrderCancelled: it scheduled, then cancelled.
    assert [s["status"] for s in api.shipments(order["id"])] in ([], ["CANCELLED"])


# -- retry tiers and the parking lot ------------------------------------------------
def test_a_transient_failure_is_retried_through_this_services_tiers(api: Api) -> None:
    sku, customer = api.product(available=2), api.account()
    with faults("payment/consumer.before_commit:InventoryReserved=raise"):
        order = api.place(customer, [(sku, 1)])
        # First attempt fails → tier 1 → second attempt fails → it waits in tier 2.
        poll(
            lambda: queue_depth(_tier("payment", 1)),
            lambda n: n >= 1,
            timeout=15,
            what="the event in the second retry tier",
            interval=0.05,
        )
        assert api.order(order["id"])["status"] == "PENDING"
    final = settle(api, [order["id"]])[0]  # back from the tier, to payment only: charged once
    assert final["status"] == "COMPLETED"
    assert [p["kind"] for p in api.payments(order["id"])] == ["charge"]


def _tier(service: str, index: int) -> str:
    delay_ms = int(RETRY_DELAYS[index] * 1000)
    return f"{service}.retry.{delay_ms // 1000}s" if delay_ms % 1000 == 0 else f"{service}.retry.{delay_ms}ms"


def test_after_the_last_tier_a_message_is_parked_then_replayed(api: Api) -> None:
    sku, customer = api.product(available=2), api.account()
    with faults("shipping/consumer.before_commit:PaymentCompleted=raise"):
        order = api.place(customer, [(sku, 1)])
        [message] = poll(
            lambda: parked("shipping", order["id"]),
            lambda m: len(m) == 1,
            timeout=TIERS_SECONDS + 15,
            what="the parked PaymentCompleted",
        )
    assert message["event_type"] == "PaymentCompleted"
    assert message["status"] == "PARKED"
    assert message["attempts"] == len(RETRY_DELAYS)
    assert message["reason"] == f"retries exhausted after {len(RETRY_DELAYS) + 1} attempts"
    assert api.order(order["id"])["status"] == "PENDING"  # stuck, and visible as such
    shown = manage("shipping", "parked", "show", str(message["id"]))
    assert "InjectedFault" in shown
    manage("shipping", "parked", "replay", str(message["id"]), "--operator", "e2e-test")
    final = settle(api, [order["id"]])[0]
    assert final["status"] == "COMPLETED"
    [after] = parked("shipping", order["id"])
    assert after["status"] == "REPLAYED"
    assert "replay by e2e-test" in manage("shipping", "parked", "show", str(message["id"]))


def test_a_failing_compensation_is_parked_and_the_order_stays_compensating(api: Api) -> None:
    sku, customer = api.product(available=2), api.account()
    with faults("inventory/consumer.before_commit:ShipmentFailed=raise"):
        order = api.place(customer, [(sku, 1)], "AQ")
        poll(
            lambda: parked("inventory", order["id"]),
            lambda m: len(m) == 1,
            timeout=TIERS_SECONDS + 15,
            what="the parked compensation",
        )
    stuck = api.order(order["id"])
    assert stuck["status"] == "COMPENSATING"  # refunded, waiting for the release: never CANCELLED early
    assert api.stock(sku)["reserved"] == 1
    manage("inventory", "parked", "replay", "--all", "--operator", "e2e-test")
    final = settle(api, [order["id"]])[0]
    assert final["status"] == "CANCELLED"
    stock = api.stock(sku)
    assert (stock["available"], stock["reserved"]) == (2, 0)


# -- crashes of real processes ------------------------------------------------------
@pytest.mark.parametrize("point", ["consumer.before_commit", "consumer.after_commit"])
def test_a_worker_killed_mid_handler_applies_the_event_exactly_once(api: Api, point: str) -> None:
    """SIGKILL inside the handler's transaction, or after its commit before the ack."""
    sku, customer = api.product(price="2.00", available=5), api.account(balance="10.00")
    before = pid("shipping-worker")
    with faults(f"shipping/{point}:PaymentCompleted=crash"):
        order = api.place(customer, [(sku, 2)])
        wait_restarted("shipping-worker", before)
    final = settle(api, [order["id"]])[0]  # PaymentCompleted was redelivered
    assert final["status"] == "COMPLETED"
    assert [s["status"] for s in api.shipments(order["id"])] == ["SCHEDULED"]
    assert [s["event_type"] for s in final["timeline"]].count("ShipmentScheduled") == 1
    stock_conserved(api, sku, initial=5, completed=2)
    assert api.balance(customer) == Decimal("6.00")


def order_duplicates(api: Api) -> float:
    """Deliveries the order service's inbox absorbed so far (every process, from /metrics)."""
    total = 0.0
    for line in api.get("order", "/metrics").text.splitlines():
        if line.startswith("saga_deliveries_total{") and 'outcome="duplicate"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_a_worker_killed_between_a_batch_commit_and_its_ack_loses_and_doubles_nothing(
    api: Api, stopped
) -> None:
    """Group commit: the order worker commits a batch of many deliveries, then is SIGKILLed
    before its one multiple-ack. Every delivery of the batch comes back, and the inbox
    absorbs each: every saga ends exactly once, every event once on its timeline."""
    sku, customer = api.product(price="1.00", available=20), api.account(balance="100.00")
    stopped("order-worker")
    orders = place_many(6, sku=sku, customer=customer)
    # Each saga's InventoryReserved, PaymentCompleted and ShipmentScheduled wait for the order
    # worker, which will take them as one batch (up to SAGA_BATCH_MAX) when it starts.
    poll(lambda: queue_depth("order.events"), lambda n: n >= 18, timeout=20, what="18 deliveries queued")
    duplicates = order_duplicates(api)
    with faults("order/consumer.after_commit=crash"):
        ctl("start", "order-worker", check=False)  # may die within supervisor's startsecs: restarted
        poll(
            lambda: order_duplicates(api) - duplicates,
            lambda n: n >= 2,
            timeout=30,
            what="a killed batch's deliveries to come back as duplicates",
        )
    finals = settle(api, orders)  # SPEC §5 on each: one charge, one shipment, stock deducted once…
    assert {final["status"] for final in finals} <= {"COMPLETED", "CANCELLED"}  # (the deadline may win)
    completed = sum(final["status"] == "COMPLETED" for final in finals)
    stock_conserved(api, sku, initial=20, completed=completed)
    assert api.balance(customer) == Decimal("100.00") - completed


def test_a_relay_killed_after_publishing_before_marking_duplicates_nothing(api: Api) -> None:
    sku, customer = api.product(price="2.00", available=5), api.account(balance="10.00")
    before = pid("order-relay")
    # The web process leaves OrderPlaced to the relay (as if it died right after its commit).
    with faults("order/outbox.after_commit=raise,order/relay.after_publish=crash"):
        order = api.place(customer, [(sku, 1)])
        wait_restarted("order-relay", before)
    final = settle(api, [order["id"]])[0]  # OrderPlaced went out at least twice
    assert final["status"] == "COMPLETED"
    assert len(api.reservations(order["id"])) == 1
    stock_conserved(api, sku, initial=5, completed=1)
    assert api.balance(customer) == Decimal("8.00")


def test_rabbitmq_stopped_and_started_with_orders_in_flight(api: Api) -> None:
    sku, customer = api.product(price="1.00", available=30), api.account(balance="1000.00")
    orders = place_many(10, sku=sku, customer=customer)
    rabbitmqctl("stop_app")
    try:
        orders += place_many(10, sku=sku, customer=customer)  # accepted while the broker is away
        time.sleep(2)  # keep the broker down for a while: this is the fault, not a wait
    finally:
        rabbitmqctl("start_app")
    finals = settle(api, orders, timeout=90)
    completed = sum(order["status"] == "COMPLETED" for order in finals)
    assert completed == 20
    stock_conserved(api, sku, initial=30, completed=completed)
    assert api.balance(customer) == Decimal("1000.00") - completed


def test_database_connections_terminated_with_orders_in_flight(api: Api) -> None:
    sku, customer = api.product(price="1.00", available=30), api.account(balance="1000.00")
    orders = place_many(10, sku=sku, customer=customer)
    killed = terminate_db_connections()
    orders += place_many(10, sku=sku, customer=customer)
    killed += terminate_db_connections()
    assert killed > 0
    finals = settle(api, orders, timeout=90)
    completed = sum(order["status"] == "COMPLETED" for order in finals)
    assert completed == 20
    stock_conserved(api, sku, initial=30, completed=completed)
    assert api.balance(customer) == Decimal("1000.00") - completed
