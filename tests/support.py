"""Helpers for tests that drive the running stack over HTTP (and make ctl)."""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parent.parent
TOKEN = os.environ.get("SAGA_API_TOKEN", "dev-token")
PORTS = {
    "order": int(os.environ.get("SAGA_ORDER_PORT", "8001")),
    "payment": int(os.environ.get("SAGA_PAYMENT_PORT", "8002")),
    "inventory": int(os.environ.get("SAGA_INVENTORY_PORT", "8003")),
    "shipping": int(os.environ.get("SAGA_SHIPPING_PORT", "8004")),
}
TERMINAL = {"COMPLETED", "CANCELLED", "REJECTED"}


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
        body = {
            "customer_id": customer_id,
            "items": [{"sku": sku, "quantity": quantity} for sku, quantity in items],
            "shipping_address": {"country": country},
        }
        response = self.post("order", "/api/orders/", json=body, **kwargs)
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


def ctl(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """``make ctl ARGS=...`` — supervisorctl of the running stack."""
    result = subprocess.run(
        [str(ROOT / "scripts" / "stack.sh"), "ctl", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"supervisorctl {' '.join(args)} failed: {result.stdout}{result.stderr}")
    return result


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
