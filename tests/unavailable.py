"""Every endpoint of a service while its database is away: 503, Retry-After, and a JSON body
saying what is down and that a retry is safe (per-service tests, real PostgreSQL).

The database is made unreachable for real: the connection is closed and its port pointed
at one nobody listens on, so psycopg2 fails to connect as it would with PostgreSQL stopped.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from typing import Any

from django.conf import settings
from django.db import connection
from django.test import Client


@contextlib.contextmanager
def database_away() -> Iterator[None]:
    real = dict(connection.settings_dict)
    connection.close()
    connection.settings_dict.update(HOST="127.0.0.1", PORT="1")
    try:
        yield
    finally:
        connection.close()
        connection.settings_dict.clear()
        connection.settings_dict.update(real)


UUID = "01a24c06-e207-7933-8832-1730ddd927c0"
# Every endpoint of every service's API, with a body its validation accepts, so that the
# request reaches the database (each service's test checks this list against its OpenAPI
# schema; tests/cluster asks them through the cluster's gateway with PostgreSQL stopped).
ENDPOINTS: dict[str, list[tuple[str, str, Any]]] = {
    "order": [
        ("GET", "/api/flow/", None),
        ("GET", "/api/orders/", None),
        ("GET", f"/api/orders/{UUID}/", None),
        (
            "POST",
            "/api/orders/",
            {
                "customer_id": "c",
                "items": [{"sku": "s", "quantity": 1}],
                "shipping_address": {"country": "FR"},
            },
        ),
        ("POST", f"/api/orders/{UUID}/cancel/", {}),
    ],
    "payment": [
        ("GET", "/api/flow/", None),
        ("GET", "/api/accounts/", None),
        ("GET", "/api/accounts/someone/", None),
        ("POST", "/api/accounts/", {"customer_id": "new", "balance": "1.00"}),
        ("GET", "/api/payments/", None),
    ],
    "inventory": [
        ("GET", "/api/flow/", None),
        ("GET", "/api/products/", None),
        ("GET", "/api/products/a-sku/", None),
        ("POST", "/api/products/", {"sku": "new", "name": "n", "price": "1.00", "available": 1}),
        ("GET", "/api/reservations/", None),
    ],
    "shipping": [("GET", "/api/flow/", None), ("GET", "/api/shipments/", None)],
}


def assert_every_endpoint_listed(service: str) -> None:
    """ENDPOINTS[service] names every operation of the service's OpenAPI schema."""
    client = Client(HTTP_AUTHORIZATION=f"Bearer {settings.SAGA_API_TOKEN}")
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/json").json()
    operations = {
        (method.upper(), re.sub(r"\{[^}]+\}", "{}", path))
        for path, methods in schema["paths"].items()
        for method in methods
        if method in ("get", "post", "put", "patch", "delete") and path != "/api/schema/"  # no data
    }
    listed = {(method, path.replace(UUID, "{}")) for method, path, _ in ENDPOINTS[service]}
    listed = {(m, re.sub(r"/(someone|a-sku)/", "/{}/", p)) for m, p in listed}
    assert operations == listed, f"{service}: schema {sorted(operations)} != listed {sorted(listed)}"


def assert_unavailable(requests: list[tuple[str, str, Any]]) -> None:
    """``requests``: (method, path, JSON body or None). Each must answer 503 while the
    database is away, and the first again 2xx once it is back."""
    client = Client(raise_request_exception=False, HTTP_AUTHORIZATION=f"Bearer {settings.SAGA_API_TOKEN}")

    def send(method: str, path: str, body: Any) -> Any:
        if method == "GET":
            return client.get(path)
        return client.post(path, body or {}, content_type="application/json", HTTP_IDEMPOTENCY_KEY="k-503")

    with database_away():
        for method, path, body in requests:
            response = send(method, path, body)
            assert response.status_code == 503, (method, path, response.status_code, response.content[:300])
            assert response["Retry-After"].isdigit(), (method, path)
            answer = response.json()
            assert answer["error"] == "service_unavailable", answer
            assert answer["unavailable"] == "database", answer
            assert settings.SERVICE_NAME in answer["message"], answer
            assert "Idempotency-Key" in answer["message"], answer
    method, path, body = requests[0]
    assert send(method, path, body).status_code < 300  # the connection comes back by itself
