"""Helpers for tests that drive the running stack over HTTP.

Operating the stack itself (supervisor, RabbitMQ, PostgreSQL, fault injection) is
``scripts/stackops.py``, shared with the tools; its names are re-exported here for the tests.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import time
import types
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import requests

from common.services import SERVICES, port
from scripts.client import order_body
from scripts.stackops import (  # noqa: F401 - re-exported for the tests
    BROKER_URL,
    FAULTS_FILE,
    ROOT,
    StackError,
    clear_faults,
    ctl,
    faults,
    manage,
    pid,
    queue_depth,
    rabbitmqctl,
    sql,
    terminate_db_connections,
)

TOKEN = os.environ.get("SAGA_API_TOKEN", "dev-token")
PORTS = {service: port(service) for service in SERVICES}
TERMINAL = {"COMPLETED", "CANCELLED", "REJECTED"}
RETRY_DELAYS = [float(x) for x in os.environ.get("SAGA_RETRY_DELAYS", "1,5,30").split(",")]
DEADLINE_SECONDS = float(os.environ.get("SAGA_ORDER_DEADLINE_SECONDS", "30"))


def load_script(name: str) -> types.ModuleType:
    """Import ``scripts/<name>.py`` (the scripts are not a package) as module ``saga_<name>``."""
    path = ROOT / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"saga_{name}", path)
    assert spec is not None, f"cannot load {path}"
    assert spec.loader is not None, f"cannot load {path}"
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # registered first: dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def url(service: str, path: str) -> str:
    return f"http://127.0.0.1:{PORTS[service]}{path}"


class Api:
    """A thin client: every call names its service; the bearer token is added."""

    def __init__(self, token: str = TOKEN) -> None:
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token}"

    def request(self, method: str, service: str, path: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", 30)
        return self.session.request(method, url(service, path), **kwargs)

    def get(self, service: str, path: str, **kwargs: Any) -> requests.Response:
        return self.request("GET", service, path, **kwargs)

    def post(self, service: str, path: str, **kwargs: Any) -> requests.Response:
        return self.request("POST", service, path, **kwargs)

    # -- fixtures of the domain ------------------------------------------------
    def product(self, *, price: str = "2.50", available: int = 100, sku: str | None = None) -> str:
        sku = sku or f"sku-{uuid.uuid4().hex[:12]}"
        response = self.post(
            "inventory",
            "/api/products/",
            json={"sku": sku, "name": sku, "price": price, "available": available},
        )
        assert response.status_code == 201, response.text
        return sku

    def account(self, *, balance: str = "1000.00", customer_id: str | None = None) -> str:
        customer_id = customer_id or f"cust-{uuid.uuid4().hex[:12]}"
        response = self.post(
            "payment", "/api/accounts/", json={"customer_id": customer_id, "balance": balance}
        )
        assert response.status_code == 201, response.text
        return customer_id

    def place(
        self, customer_id: str, items: list[tuple[str, int]], country: str = "FR", **kwargs: Any
    ) -> dict[str, Any]:
        response = self.post("order", "/api/orders/", json=order_body(customer_id, items, country), **kwargs)
        assert response.status_code == 201, response.text
        return response.json()

    def order(self, order_id: str) -> dict[str, Any]:
        response = self.get("order", f"/api/orders/{order_id}/")
        assert response.status_code == 200, response.text
        return response.json()

    def wait_terminal(self, order_id: str, timeout: float = 30.0) -> dict[str, Any]:
        return poll(
            lambda: self.order(order_id),
            lambda o: o["status"] in TERMINAL,
            timeout=timeout,
            what=f"order {order_id} to reach a terminal state",
        )

    def stock(self, sku: str) -> dict[str, Any]:
        response = self.get("inventory", f"/api/products/{sku}/")
        assert response.status_code == 200, response.text
        return response.json()

    def balance(self, customer_id: str) -> Decimal:
        response = self.get("payment", f"/api/accounts/{customer_id}/")
        assert response.status_code == 200, response.text
        return Decimal(response.json()["balance"])

    def payments(self, order_id: str) -> list[dict[str, Any]]:
        return self.get("payment", f"/api/payments/?order_id={order_id}").json()["results"]

    def shipments(self, order_id: str) -> list[dict[str, Any]]:
        return self.get("shipping", f"/api/shipments/?order_id={order_id}").json()["results"]

    def reservations(self, order_id: str) -> list[dict[str, Any]]:
        return self.get("inventory", f"/api/reservations/?order_id={order_id}").json()["results"]


def poll(
    fetch: Callable[[], Any], done: Callable[[Any], bool], *, timeout: float, what: str, interval: float = 0.1
) -> Any:
    """Call ``fetch`` until ``done(result)``; fail with the last result after ``timeout``."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = fetch()
        if done(last):
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last seen: {last}")


def publish(
    routing_key: str,
    body: bytes | str,
    *,
    exchange: str = "saga.events",
    signed_by: str | None = None,
    headers: dict[str, Any] | None = None,
    broker: str = BROKER_URL,
) -> None:
    """Put ``body`` on the broker as a saga event is put there (confirmed, persistent JSON),
    signed as ``signed_by`` if given; ``broker`` to publish as another user."""
    from kombu import Connection

    from common.messaging.broker import WIRE
    from common.messaging.signing import SIGNATURE_HEADER

    raw = body.encode() if isinstance(body, str) else body
    headers = dict(headers or {})
    if signed_by:
        headers[SIGNATURE_HEADER] = signature(signed_by, raw)
    with Connection(broker, transport_options={"confirm_publish": True}) as conn:
        conn.Producer().publish(
            raw, exchange=exchange, routing_key=routing_key, headers=headers, retry=True, **WIRE
        )


def reserved_again(order: dict[str, Any], customer_id: str) -> str:
    """The InventoryReserved ``order``'s saga went through, rebuilt with its event id (a
    redelivery, as the broker would make after a crash), as JSON."""
    from datetime import UTC, datetime

    from common.messaging.envelope import Envelope

    reserved = next(s for s in order["timeline"] if s["event_type"] == "InventoryReserved")
    return Envelope(
        event_id=reserved["event_id"],
        event_type="InventoryReserved",
        saga_id=order["id"],
        producer="inventory",
        occurred_at=datetime.fromisoformat(reserved["at"]).astimezone(UTC),
        payload={
            "customer_id": customer_id,
            "total": order["total"],
            "lines": [
                {"sku": i["sku"], "quantity": i["quantity"], "unit_price": i["unit_price"]}
                for i in order["items"]
            ],
        },
    ).to_json()


# The steps an order's timeline shows on the saga's two longest paths, in order.
COMPLETED_STEPS = [
    "OrderPlaced",
    "InventoryReserved",
    "PaymentCompleted",
    "ShipmentScheduled",
    "OrderCompleted",
]
SHIPPING_FAILED_STEPS = [  # the destination is not served: every earlier step compensated
    "OrderPlaced",
    "InventoryReserved",
    "PaymentCompleted",
    "ShipmentFailed",
    "InventoryReleased",
    "PaymentRefunded",
]


def parked(service: str, saga_id: str) -> list[dict[str, Any]]:
    return json.loads(manage(service, "parked", "list", "--all", "--json", "--saga", saga_id))


def signature(producer: str, body: bytes) -> str:
    """What ``producer`` would sign ``body`` with: its key from the environment, as the stack has it."""
    from common.messaging.signing import signature_of
    from common.settings import dev_event_key

    key = os.environ.get(f"SAGA_EVENT_KEY_{producer.upper()}", dev_event_key(producer)).split(",")[0]
    return signature_of(body, key.strip().encode())


def wait_invariants(api: Api, order_id: str, timeout: float = 20.0) -> dict[str, Any]:
    """SPEC §5 holds "once the system is quiet": after a terminal state the last effects
    (a deduction, a refund confirmed late) may still be in flight. Poll until they hold."""
    deadline = time.monotonic() + timeout
    while True:
        order = api.order(order_id)
        try:
            check_order_invariants(api, order)
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
        else:
            return order


def check_order_invariants(api: Api, order: dict[str, Any]) -> None:
    """SPEC §5 for one terminal order, read through the services' APIs."""
    order_id = order["id"]
    payments = api.payments(order_id)
    charges = [Decimal(p["amount"]) for p in payments if p["kind"] == "charge"]
    refunds = [Decimal(p["amount"]) for p in payments if p["kind"] == "refund"]
    shipments = api.shipments(order_id)
    reservations = api.reservations(order_id)
    if order["status"] == "COMPLETED":
        assert charges == [Decimal(order["total"])], (order_id, payments)
        assert refunds == [], (order_id, payments)
        assert [s["status"] for s in shipments] == ["SCHEDULED"], (order_id, shipments)
        assert reservations, order_id
        assert all(r["status"] == "DEDUCTED" for r in reservations), reservations
    else:
        assert sum(charges) - sum(refunds) == 0, (order_id, payments)
        assert all(s["status"] != "SCHEDULED" for s in shipments), (order_id, shipments)
        assert all(r["status"] == "RELEASED" for r in reservations), (order_id, reservations)
