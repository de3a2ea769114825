"""One order is one trace across the four services, and logs about events carry its ids.

`make test` starts an in-memory OTLP receiver (scripts/span_sink.py) and runs the stack
with OTEL_TRACES_EXPORTER=otlp pointing at it; this test reads the spans back from it.
"""

from __future__ import annotations

import json
import os

import pytest
import requests

from tests.support import ROOT, Api, ctl, poll, wait_invariants

SINK = os.environ.get("SAGA_SPAN_SINK_URL", "http://127.0.0.1:4318")
HANDLERS = {
    "inventory handle OrderPlaced",
    "payment handle InventoryReserved",
    "order handle InventoryReserved",
    "shipping handle PaymentCompleted",
    "order handle ShipmentScheduled",
    "inventory handle OrderCompleted",
    "order handle InventoryDeducted",
}


def spans(**filters: str) -> list[dict]:
    try:
        return requests.get(f"{SINK}/spans", params=filters, timeout=10).json()
    except requests.RequestException as exc:
        pytest.fail(f"no span sink at {SINK} ({exc}); run through `make test`, which starts it")


def trace_defects(whole: list[dict]) -> list[str]:
    """What keeps one order's spans from being one trace rooted at its POST (empty: none)."""
    defects = []
    if not any(s["name"].startswith("POST") and s["service"] == "order" for s in whole):
        defects.append("no server span of the order's POST")
    if not any(s["name"] == "order publish OrderPlaced" for s in whole):
        defects.append("no span of the relay publishing OrderPlaced")
    ids = {s["span_id"] for s in whole}
    roots = [s["name"] for s in whole if s["parent_span_id"] not in ids]
    if len(roots) != 1:
        defects.append(f"{len(roots)} spans without their parent in the trace: {roots}")
    return defects


def test_one_order_is_one_trace_across_the_four_services(api: Api) -> None:
    order = api.wait_terminal(api.place(api.account(), [(api.product(), 1)])["id"])
    assert order["status"] == "COMPLETED"
    wait_invariants(api, order["id"])
    found = poll(
        lambda: spans(saga_id=order["id"]),
        lambda found: {s["name"] for s in found} >= HANDLERS,
        timeout=20,
        what="the handler spans of every service",
    )
    traces = {s["trace_id"] for s in found}
    assert len(traces) == 1, f"one order, {len(traces)} traces: {sorted(traces)}"
    [trace_id] = traces
    for span in found:
        if span["name"] in HANDLERS:
            assert span["attributes"]["event_type"] == span["name"].rsplit(" ", 1)[1]
    # Each process exports its spans in batches of its own, so the order web's span of the
    # POST can reach the sink after the handlers' spans: wait for the trace to be whole.
    # It starts at the REST request (Django's server span), goes through the outbox, and
    # every span's parent is in the same trace (nothing dangles) except the root's.
    _, whole = poll(
        lambda: (trace_defects(w := spans(trace_id=trace_id)), w),
        lambda seen: not seen[0],
        timeout=20,
        what=f"trace {trace_id} to be whole",
    )
    assert {s["service"] for s in whole} >= {"order", "inventory", "payment", "shipping"}

    log_lines = [
        json.loads(line)
        for path in (ROOT / "var" / "log").glob("inventory-worker*.log")
        for line in path.read_text().splitlines()
        if order["id"] in line and line.startswith("{")
    ]
    handled = [line for line in log_lines if line.get("message", "").startswith("handled")]
    assert handled, "no JSON log line about this order in the inventory worker's log"
    for line in handled:
        assert line["saga_id"] == order["id"]
        assert line["event_id"]
        assert line["trace_id"] == trace_id


def test_a_cancellation_continues_the_orders_trace(api: Api) -> None:
    """Cancelled by another request: the undo steps still belong to the order's trace."""
    ctl("stop", "shipping-worker")
    try:
        order = api.place(api.account(), [(api.product(), 1)])
        poll(lambda: api.payments(order["id"]), lambda p: len(p) == 1, timeout=15, what="the charge")
        assert api.post("order", f"/api/orders/{order['id']}/cancel/").status_code == 202
    finally:
        ctl("start", "shipping-worker")
    assert api.wait_terminal(order["id"])["status"] == "CANCELLED"
    undo = {
        "inventory handle OrderCancelled",
        "payment handle OrderCancelled",
        "shipping handle OrderCancelled",
        "order handle ShipmentCancelled",
    }
    found = poll(
        lambda: spans(saga_id=order["id"]),
        lambda found: undo <= {s["name"] for s in found},
        timeout=20,
        what="the cancellation's spans",
    )
    assert len({s["trace_id"] for s in found}) == 1, {(s["name"], s["trace_id"]) for s in found}
