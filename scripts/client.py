"""A lean client of the platform's REST API, for the tools that load it (make bench, make chaos).

One keep-alive HTTP/1.1 connection per service per client, the bearer token added, JSON in
and out; nothing else. The load generator's CPU counts in `make bench`'s CPU per saga, and
``requests`` spent about 1 ms of it per request against 0.2 ms for ``http.client`` (a
thousand GETs of /healthz each way): this keeps the measuring instrument out of the
measurement. Not thread-safe: one client per thread.
"""

from __future__ import annotations

import http.client
import json as jsonlib
import os
import time
from decimal import Decimal
from typing import Any

from common.services import SERVICES, port

TOKEN = os.environ.get("SAGA_API_TOKEN", "dev-token")
HOST = "127.0.0.1"
PORTS = {service: port(service) for service in SERVICES}
TERMINAL = frozenset({"COMPLETED", "CANCELLED", "REJECTED"})


def order_body(customer_id: str, items: list[tuple[str, int]], country: str = "FR") -> dict[str, Any]:
    """The body of ``POST /api/orders/`` for (sku, quantity) lines shipped to ``country``."""
    return {
        "customer_id": customer_id,
        "items": [{"sku": sku, "quantity": quantity} for sku, quantity in items],
        "shipping_address": {"country": country},
    }


class ClientError(OSError):
    """The request got no answer (connection refused, reset, timed out)."""


class Response:
    def __init__(self, status: int, headers: http.client.HTTPMessage, content: bytes) -> None:
        self.status_code = status
        self.headers = headers  # case-insensitive, as HTTP headers are
        self.content = content

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")

    def json(self) -> Any:
        return jsonlib.loads(self.content)


# A kept-alive connection the server closed meanwhile fails like this on its next use; the
# request is then sent again once on a new connection (as urllib3 does).
_STALE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)


class Api:
    """Every call names its service (``order``, ``payment``, ``inventory``, ``shipping``)."""

    def __init__(self, token: str = TOKEN) -> None:
        self.token = token
        self._connections: dict[tuple[str, float], http.client.HTTPConnection] = {}

    def request(
        self,
        method: str,
        service: str,
        path: str,
        *,
        json: Any = None,
        headers: dict[str, str] | None = None,
        timeout: float = 30,
    ) -> Response:
        body = None if json is None else jsonlib.dumps(json).encode()
        sent = {"Authorization": f"Bearer {self.token}", **(headers or {})}
        if body is not None:
            sent["Content-Type"] = "application/json"
        key = (service, timeout)
        for attempt in (1, 2):
            connection = self._connections.get(key)
            reused = connection is not None
            if connection is None:
                connection = self._connections[key] = http.client.HTTPConnection(
                    HOST, PORTS[service], timeout=timeout
                )
            try:
                connection.request(method, path, body=body, headers=sent)
                answer = connection.getresponse()
                content = answer.read()
            except _STALE as exc:
                self._drop(key)
                if reused and attempt == 1:
                    continue
                raise ClientError(f"{method} {service} {path}: {exc}") from exc
            except (OSError, http.client.HTTPException) as exc:
                self._drop(key)
                raise ClientError(f"{method} {service} {path}: {exc}") from exc
            if answer.will_close:
                self._drop(key)
            return Response(answer.status, answer.headers, content)
        raise AssertionError("unreachable")

    def get(self, service: str, path: str, **kwargs: Any) -> Response:
        return self.request("GET", service, path, **kwargs)

    def post(self, service: str, path: str, **kwargs: Any) -> Response:
        return self.request("POST", service, path, **kwargs)

    def close(self) -> None:
        for key in list(self._connections):
            self._drop(key)

    def _drop(self, key: tuple[str, float]) -> None:
        connection = self._connections.pop(key, None)
        if connection is not None:
            connection.close()

    # -- what the tools set up --------------------------------------------------------

    def product(self, *, sku: str, price: str = "2.50", available: int = 100) -> str:
        response = self.post(
            "inventory",
            "/api/products/",
            json={"sku": sku, "name": sku, "price": price, "available": available},
        )
        if response.status_code != 201:
            raise ClientError(f"creating product {sku}: {response.status_code} {response.text}")
        return sku

    def account(self, *, customer_id: str, balance: str = "1000.00") -> str:
        response = self.post(
            "payment", "/api/accounts/", json={"customer_id": customer_id, "balance": balance}
        )
        if response.status_code != 201:
            raise ClientError(f"creating account {customer_id}: {response.status_code} {response.text}")
        return customer_id

    def place(
        self, customer_id: str, items: list[tuple[str, int]], country: str = "FR", **kwargs: Any
    ) -> dict[str, Any]:
        """POST an order; the order as the API answered it (201)."""
        body = order_body(customer_id, items, country)
        return self._expect(201, self.post("order", "/api/orders/", json=body, **kwargs), "placing an order")

    def order(self, order_id: str) -> dict[str, Any]:
        return self._expect(200, self.get("order", f"/api/orders/{order_id}/"), f"reading order {order_id}")

    def wait_terminal(self, order_id: str, timeout: float = 30.0) -> dict[str, Any]:
        """The order once it is COMPLETED, CANCELLED or REJECTED; ClientError after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            order = self.order(order_id)
            if order["status"] in TERMINAL:
                return order
            if time.monotonic() > deadline:
                raise ClientError(f"order {order_id} still {order['status']} after {timeout:.0f} s")
            time.sleep(0.1)

    def stock(self, sku: str) -> dict[str, Any]:
        return self._expect(200, self.get("inventory", f"/api/products/{sku}/"), f"reading product {sku}")

    def balance(self, customer_id: str) -> Decimal:
        account = self._expect(
            200, self.get("payment", f"/api/accounts/{customer_id}/"), f"reading account {customer_id}"
        )
        return Decimal(account["balance"])

    @staticmethod
    def _expect(status: int, response: Response, what: str) -> Any:
        if response.status_code != status:
            raise ClientError(f"{what}: {response.status_code} {response.text}")
        return response.json()
