"""What an operator watches matches what happened: metrics after a run of every path,
the saga view over the API and on the command line."""

from __future__ import annotations

import re
import time

from common.services import SERVICES
from tests.support import (
    SHIPPING_FAILED_STEPS,
    Api,
    manage,
    poll,
    publish,
    queue_depth,
    reserved_again,
    wait_invariants,
)


def scrape(api: Api) -> dict[tuple[str, str], float]:
    """Every sample of every service's /metrics, keyed by (service, name{labels})."""
    samples: dict[tuple[str, str], float] = {}
    for service in SERVICES:
        for line in api.get(service, "/metrics").text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                samples[(service, name)] = float(value)
    return samples


def total(samples: dict[tuple[str, str], float], service: str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` on ``service`` whose labels include ``labels``."""
    found = 0.0
    for (svc, key), value in samples.items():
        metric, _, rest = key.partition("{")
        if svc != service or metric != name:
            continue
        if all(f'{k}="{v}"' in rest for k, v in labels.items()):
            found += value
    return found


def quiet(api: Api) -> None:
    """Wait until no event is queued or unpublished anywhere (earlier tests' tails)."""

    def idle() -> bool:
        queues = [f"{s}.events" for s in SERVICES]
        if any(queue_depth(q) for q in queues):
            return False
        samples = scrape(api)
        return all(total(samples, s, "saga_outbox_backlog") == 0 for s in SERVICES)

    poll(lambda: idle() and (time.sleep(0.3) or idle()), bool, timeout=60, what="a quiet system")


def test_metrics_count_what_happened(api: Api) -> None:
    sku = api.product(price="5.00", available=10)
    rich, poor = api.account(balance="500.00"), api.account(balance="1.00")
    quiet(api)
    before = scrape(api)
    paths = [
        (rich, sku, "FR"),
        (rich, "no-such-sku", "FR"),
        (rich, sku + "x", "FR"),
        (poor, sku, "FR"),
        ("nobody-" + sku, sku, "FR"),
        (rich, sku, "AQ"),
    ]
    ids = [api.place(customer, [(item, 1)], country)["id"] for customer, item, country in paths]
    finals = [api.wait_terminal(order_id) for order_id in ids]
    for order_id in ids:
        wait_invariants(api, order_id)
    completed = finals[0]
    publish("inventory.reserved", reserved_again(completed, rich), signed_by="inventory")
    poll(
        lambda: (
            total(scrape(api), "payment", "saga_deliveries_total", outcome="duplicate")
            - total(before, "payment", "saga_deliveries_total", outcome="duplicate")
        ),
        lambda n: n >= 1,
        timeout=15,
        what="the payment worker to count the duplicate",
    )
    quiet(api)
    after = scrape(api)

    def delta(service: str, name: str, **labels: str) -> float:
        return total(after, service, name, **labels) - total(before, service, name, **labels)

    assert [f["status"] for f in finals] == [
        "COMPLETED",
        "REJECTED",
        "REJECTED",
        "CANCELLED",
        "CANCELLED",
        "CANCELLED",
    ]
    assert delta("order", "saga_started_total") == 6
    assert delta("order", "saga_finished_total", outcome="COMPLETED") == 1
    assert delta("order", "saga_finished_total", outcome="REJECTED") == 2
    assert delta("order", "saga_finished_total", outcome="CANCELLED") == 3
    assert delta("order", "saga_duration_seconds_count") == 6
    # Inventory handled 6 OrderPlaced, 2 PaymentDeclined, 1 ShipmentFailed, 1 OrderCompleted.
    assert delta("inventory", "saga_deliveries_total", outcome="handled") == 10
    assert delta("inventory", "saga_handler_seconds_count", event_type="OrderPlaced") == 6
    assert delta("payment", "saga_deliveries_total", outcome="duplicate") == 1
    assert delta("payment", "saga_deliveries_total", outcome="handled") == 5  # 4 reserved + 1 failed
    # The order relay published 6 OrderPlaced and 1 OrderCompleted.
    assert delta("order", "saga_outbox_published_total") == 7
    assert delta("order", "saga_parked_total") == 0
    assert total(after, "order", "saga_outbox_backlog") == 0


def test_saga_show_prints_the_timeline_for_a_person(api: Api) -> None:
    order = api.wait_terminal(api.place(api.account(), [(api.product(), 1)], "AQ")["id"])
    wait_invariants(api, order["id"])
    shown = manage("order", "saga", "show", order["id"])
    assert f"order {order['id']}  CANCELLED" in shown
    assert "destination country AQ is not served" in shown
    for step in SHIPPING_FAILED_STEPS:
        assert re.search(rf"\s{step}\s+\w+", shown), (step, shown)
    assert "waiting for nothing" in shown
