"""The saga map's figures (common/messaging/flow.py) and page (order_svc/orders/sagamap.py), on
the Order service's PostgreSQL.

The roll-up is checked against inbox rows made by real deliveries whose events were written a
known time before (their lag), and against orders whose status changes after their minute was
counted. The page is rendered by the admin with the other three services' answers given (their
real registries, figures chosen by the test); tests/e2e/test_browser.py drives the real thing.
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connection
from django.test import Client
from django.utils import timezone

from common.messaging import flow
from common.messaging.models import FlowMinute
from order_svc.orders import sagamap
from order_svc.orders.models import Order
from tests.events import deliver
from tests.order.orders import place, reserved
from tools.choreography import describe_services


def roll() -> None:
    assert flow.roll_up(timezone.now() - timedelta(minutes=5))


def edge(report: dict[str, Any], producer: str, event_type: str) -> dict[str, Any]:
    return next(e for e in report["edges"] if e["producer"] == producer and e["event_type"] == event_type)


# -- the lag histogram ----------------------------------------------------------------------
def buckets(**at: int) -> list[int]:
    """A histogram with ``count`` in the bucket whose upper bound is ``b<ms>`` (``over`` = last)."""
    found = [0] * (len(flow.LAG_BOUNDS_MS) + 1)
    for key, count in at.items():
        index = len(flow.LAG_BOUNDS_MS) if key == "over" else flow.LAG_BOUNDS_MS.index(int(key[1:]))
        found[index] = count
    return found


def test_percentiles_interpolate_inside_the_bucket_that_holds_the_rank():
    assert flow.percentile(buckets(), 0.5) is None
    # 10 in (5, 10]: the median is half-way through that bucket.
    assert flow.percentile(buckets(b10=10), 0.5) == pytest.approx(7.5)
    # 90 fast, 10 in (1000, 2500]: p50 among the fast, p95 half-way in the slow bucket.
    fast_and_slow = buckets(b5=90, b2500=10)
    assert flow.percentile(fast_and_slow, 0.5) <= 5
    assert flow.percentile(fast_and_slow, 0.95) == pytest.approx(1750)
    # Slower than the last bound: reported as that bound (a floor, not a guess).
    assert flow.percentile(buckets(over=3), 0.5) == flow.LAG_BOUNDS_MS[-1]


# -- the roll-up from real deliveries ------------------------------------------------------
@pytest.mark.django_db(transaction=True)
def test_deliveries_are_counted_per_edge_with_their_lag_and_retries():
    orders = [place() for _ in range(3)]
    for order in orders:
        late = reserved(str(order.id))
        outcome = deliver(dataclasses.replace(late, occurred_at=late.occurred_at - timedelta(seconds=2)))
        assert outcome.disposition.value == "handled", outcome
    roll()
    report = flow.report("5m")
    reserved_edge = edge(report, "inventory", "InventoryReserved")
    assert reserved_edge["delivered"] == 3
    assert reserved_edge["retries"] == 0
    assert 1000 <= reserved_edge["lag_p50_ms"] <= 2500  # written 2 s before it was handled
    assert 1000 <= reserved_edge["lag_p95_ms"] <= 2500
    assert report["counts"]["orders"] == {"PENDING": 3}


@pytest.mark.django_db(transaction=True)
def test_a_delivery_handled_after_retries_counts_its_attempts_on_its_edge():
    from common.messaging.broker import registry
    from common.messaging.consumer import process_delivery
    from tests.events import signed_as

    order = place()
    body = reserved(str(order.id)).to_json().encode()
    outcome = process_delivery(
        body, events=registry(), service=settings.SERVICE_NAME, signature=signed_as(body), attempt=2
    )
    assert outcome.disposition.value == "handled", outcome
    roll()
    assert edge(flow.report("5m"), "inventory", "InventoryReserved")["retries"] == 2


@pytest.mark.django_db(transaction=True)
def test_recounting_is_idempotent_and_takes_late_rows():
    order = place()
    deliver(reserved(str(order.id)))
    roll()
    roll()
    assert edge(flow.report("5m"), "inventory", "InventoryReserved")["delivered"] == 1
    deliver(reserved(str(place().id)))  # committed after the minute was counted once
    roll()
    assert edge(flow.report("5m"), "inventory", "InventoryReserved")["delivered"] == 2


@pytest.mark.django_db(transaction=True)
def test_an_old_minute_is_recounted_while_it_holds_an_open_order_and_once_it_closed():
    order = place()
    with connection.cursor() as cursor:  # placed two hours ago, still open
        cursor.execute(
            "UPDATE orders_order SET created_at = now() - interval '2 hours' WHERE id = %s", [order.id]
        )
    roll()  # recounts the last minutes, and the minute of every open order
    assert flow.report("24h")["counts"]["orders"] == {"PENDING": 1}
    assert "orders" not in flow.report("1h")["counts"]  # two hours ago: outside the last hour
    Order.objects.filter(id=order.id).update(status="COMPENSATING")
    roll()  # still open, in another open status: its minute's open count changed
    assert flow.report("24h")["counts"]["orders"] == {"COMPENSATING": 1}
    Order.objects.filter(id=order.id).update(status="CANCELLED", finished_at=timezone.now())
    roll()  # no longer open, but the table still counted it open: recounted
    assert flow.report("24h")["counts"]["orders"] == {"CANCELLED": 1}


@pytest.mark.django_db(transaction=True)
def test_a_new_relay_catches_up_from_the_first_event_handled_an_hour_at_a_time():
    order = place()
    deliver(reserved(str(order.id)))
    with connection.cursor() as cursor:
        cursor.execute("UPDATE messaging_inbox SET received_at = now() - interval '150 minutes'")
    rollup = flow.FlowRollup(interval=1.0, clock=lambda: 0.0)
    passes = 0
    while not FlowMinute.objects.filter(kind="handled").exists():
        rollup._due = 0.0
        assert rollup.roll_if_due()
        passes += 1
        assert passes <= 3, "the first pass starts at the oldest inbox row"
    assert edge(flow.report("24h"), "inventory", "InventoryReserved")["delivered"] == 1
    assert flow.report("24h")["relay"]["alive"]  # each pass beats


# -- the API --------------------------------------------------------------------------------
@pytest.mark.django_db(transaction=True)
def test_the_flow_api_answers_with_the_registry_and_refuses_an_unknown_window():
    client = Client(HTTP_AUTHORIZATION=f"Bearer {settings.SAGA_API_TOKEN}")
    deliver(reserved(str(place().id)))
    roll()
    response = client.get("/api/flow/", {"window": "1h"})
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["service"] == "order"
    assert body["window"] == "1h"
    assert {c["event_type"] for c in body["registry"]["consumes"]} >= {
        "InventoryReserved",
        "PaymentCompleted",
    }
    assert edge(body, "inventory", "InventoryReserved")["delivered"] == 1
    refused = client.get("/api/flow/", {"window": "2d"})
    assert refused.status_code == 400
    assert "window" in refused.json()["fields"]
    assert Client().get("/api/flow/").status_code == 401


# -- the map and the page -------------------------------------------------------------------
@pytest.fixture(scope="module")
def registries() -> dict[str, dict[str, Any]]:
    return {d["service"]: d for d in describe_services(["order", "payment", "inventory", "shipping"])}


def report_of(service: str, registry: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """A healthy, quiet service's answer, with ``changes``."""
    report = {
        "service": service,
        "registry": registry,
        "edges": [],
        "counts": {},
        "parked": {"in_window": {}, "open": {}, "open_total": 0},
        "outbox": {"unpublished": 0, "oldest_seconds": None},
        "relay": {"alive": True, "last_beat_seconds": 1.0},
        "queues": {"events": {"name": f"{service}.events", "ready": 0, "consumers": 2}},
        "workers_alive": True,
        "retrying": 0,
    }
    report.update(changes)
    return report


def test_the_map_marks_what_needs_a_person(registries):
    reports = {s: report_of(s, r) for s, r in registries.items()}
    reports["payment"] = report_of(
        "payment",
        registries["payment"],
        edges=[
            {
                "producer": "inventory",
                "event_type": "InventoryReserved",
                "delivered": 7,
                "retries": 0,
                "lag_p50_ms": 4.0,
                "lag_p95_ms": 9.0,
            }
        ],
        parked={"in_window": {"InventoryReserved": 1}, "open": {"InventoryReserved": 1}, "open_total": 1},
    )
    reports["shipping"] = report_of(
        "shipping",
        registries["shipping"],
        workers_alive=False,
        queues={"events": {"ready": 12, "consumers": 0}},
        relay={"alive": False, "last_beat_seconds": 60.0},
    )
    reports["inventory"] = {"service": "inventory", "error": "ConnectionError: refused"}
    built = sagamap.build("5m", reports)
    assert built.boxes["order"].problems == []
    assert built.boxes["payment"].problems == ["1 parked message(s) wait for a person"]
    assert built.boxes["shipping"].problems == [
        "no worker consumes its events queue",
        "its relay has not beaten lately",
    ]
    assert built.boxes["inventory"].problems[0].startswith("does not answer")
    arrows = {a.key: a for a in built.arrows}
    assert arrows["inventory_InventoryReserved_payment"].problems == ["1 parked"]
    assert arrows["inventory_InventoryReserved_payment"].figures["delivered"] == 7
    assert arrows["inventory_InventoryReserved_order"].problems == []
    # The inventory's registry is still drawn while it does not answer (the last one seen).
    assert "order_OrderPlaced_inventory" in arrows
    svg = sagamap.to_svg(built)
    assert 'id="svc_payment"' in svg
    assert 'class="node service problem"' in svg
    assert 'id="edge_inventory_InventoryReserved_payment"' in svg
    assert "7 handled" in svg


@pytest.mark.django_db(transaction=True)
def test_the_admin_home_shows_the_map_and_links_to_what_needs_a_person(registries, monkeypatch):
    get_user_model().objects.create_superuser("map-admin", "m@example.com", "pw")
    real_ask = sagamap._ask

    def ask(service: str, window: str) -> dict[str, Any]:
        if service == settings.SERVICE_NAME:
            return real_ask(service, window)
        parked = {"in_window": {}, "open": {"InventoryReserved": 2}, "open_total": 2}
        return report_of(service, registries[service], **({"parked": parked} if service == "payment" else {}))

    monkeypatch.setattr(sagamap, "_ask", ask)
    client = Client()
    client.force_login(get_user_model().objects.get(username="map-admin"))
    deliver(reserved(str(place().id)))
    roll()
    page = client.get("/admin/").content.decode()
    assert "<svg" in page
    assert 'id="svc_order"' in page
    assert "1 handled" in page  # the InventoryReserved this test delivered, on its arrow
    payment_parked = (
        f"{settings.SAGA_SERVICE_URLS['payment']}/admin/messaging/parkedmessage/?status__exact=PARKED"
    )
    assert f'href="{payment_parked}">2</a>' in page
    assert '<tr class="problem" id="person-payment">' in page
    assert '<tr class="" id="person-shipping">' in page
    assert "PENDING 1" in page
    full = client.get("/admin/saga-map/", {"window": "24h"})
    assert full.status_code == 200
    assert "last 24 h" in full.content.decode()
    assert Client().get("/admin/saga-map/").status_code == 302  # to the login page
