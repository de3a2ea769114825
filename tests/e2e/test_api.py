"""The REST contract of SPEC §6, driven over HTTP against the running stack.

Auth, JSON errors, order placement limits (each refused request creates nothing),
Idempotency-Key, pagination, and the inventory/payment/shipping resources.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import requests

from tests.support import PORTS, Api, url

MONEY = re.compile(r"^-?\d+\.\d{2}$")
LIST_KEYS = {"count", "next", "previous", "results"}
# One authenticated list endpoint per service.
LISTS = {
    "order": "/api/orders/",
    "payment": "/api/accounts/",
    "inventory": "/api/products/",
    "shipping": "/api/shipments/",
}
ALL_LISTS = [
    ("order", "/api/orders/"),
    ("payment", "/api/accounts/"),
    ("payment", "/api/payments/"),
    ("inventory", "/api/products/"),
    ("inventory", "/api/reservations/"),
    ("shipping", "/api/shipments/"),
]


# -- helpers --------------------------------------------------------------------


def new_customer() -> str:
    return f"cust-{uuid.uuid4().hex[:12]}"


def order_body(customer_id: str, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "customer_id": customer_id,
        "items": [{"sku": "sku-a", "quantity": 1}],
        "shipping_address": {"country": "FR"},
    }
    body.update(overrides)
    return body


def order_count(api: Api, customer_id: str) -> int:
    response = api.get("order", "/api/orders/", params={"customer_id": customer_id})
    assert response.status_code == 200, response.text
    return response.json()["count"]


def assert_json_error(response: requests.Response, status: int | tuple[int, ...]) -> dict[str, Any]:
    """The response has the expected status and a JSON body with an error code and a message."""
    expected = status if isinstance(status, tuple) else (status,)
    assert response.status_code in expected, (response.status_code, response.text[:500])
    assert response.headers["Content-Type"].startswith("application/json"), response.headers
    body = response.json()
    assert isinstance(body, dict), body
    assert isinstance(body.get("error"), str), body
    assert body["error"], body
    assert isinstance(body.get("message"), str), body
    assert body["message"].strip(), body
    return body


def dig(fields: Any, path: tuple[str, ...]) -> Any:
    """Follow ``path`` through the ``fields`` of a validation error (dict keys or list indexes)."""
    node = fields
    for key in path:
        if isinstance(node, list):
            node = node[int(key)]
        else:
            assert isinstance(node, dict), (path, fields)
            assert key in node, (path, fields)
            node = node[key]
    return node


def assert_names_field(body: dict[str, Any], path: tuple[str, ...]) -> None:
    assert body["error"] == "validation_failed", body
    assert dig(body["fields"], path), (path, body)
    assert path[0] in body["message"], body


# -- auth, health, schema, metrics ------------------------------------------------


@pytest.mark.parametrize("service", list(PORTS))
def test_no_token_is_401_json(stack: None, service: str) -> None:
    response = requests.get(url(service, LISTS[service]), timeout=10)
    body = assert_json_error(response, 401)
    assert "credentials" in body["message"].lower()
    assert response.headers.get("WWW-Authenticate", "").startswith("Bearer")


@pytest.mark.parametrize("service", list(PORTS))
@pytest.mark.parametrize("header", ["Bearer wrong-token", "Bearer", "Token dev-token", "Bearer a b"])
def test_wrong_token_is_401_json(stack: None, service: str, header: str) -> None:
    response = requests.get(url(service, LISTS[service]), headers={"Authorization": header}, timeout=10)
    assert_json_error(response, 401)


def test_post_without_token_creates_nothing(api: Api) -> None:
    customer = new_customer()
    response = requests.post(url("order", "/api/orders/"), json=order_body(customer), timeout=10)
    assert_json_error(response, 401)
    assert order_count(api, customer) == 0


@pytest.mark.parametrize("service", list(PORTS))
def test_healthz_needs_no_token(stack: None, service: str) -> None:
    response = requests.get(url(service, "/healthz"), timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    body = response.json()
    assert body["database"] == "ok", body
    assert body["broker"] == "ok", body
    assert body["service"] == service, body


@pytest.mark.parametrize("service", list(PORTS))
def test_openapi_schema_served(stack: None, service: str) -> None:
    response = requests.get(url(service, "/api/schema/"), params={"format": "json"}, timeout=30)
    assert response.status_code == 200, response.text[:500]
    schema = response.json()
    assert schema["openapi"].startswith("3."), schema.get("openapi")
    assert any(path.startswith(LISTS[service]) for path in schema["paths"]), list(schema["paths"])


@pytest.mark.parametrize("service", list(PORTS))
def test_metrics_served_as_prometheus_text(stack: None, service: str) -> None:
    response = requests.get(url(service, "/metrics"), timeout=10)
    assert response.status_code == 200, response.text[:500]
    assert response.headers["Content-Type"].startswith("text/plain")
    assert "# TYPE " in response.text
    assert "django_http_requests" in response.text


# -- errors are JSON --------------------------------------------------------------


def test_unknown_order_is_404_json(api: Api) -> None:
    order_id = uuid.uuid4()
    body = assert_json_error(api.get("order", f"/api/orders/{order_id}/"), 404)
    assert str(order_id) in body["message"]


@pytest.mark.parametrize("order_id", ["not-a-uuid", "123", "00000000-0000-0000-0000-00000000000g"])
def test_non_uuid_order_id_is_404_json(api: Api, order_id: str) -> None:
    assert_json_error(api.get("order", f"/api/orders/{order_id}/"), 404)


@pytest.mark.parametrize("service", list(PORTS))
@pytest.mark.parametrize("path", ["/api/no-such-thing/", "/api/", "/api/orders/x/y/z/"])
def test_unknown_url_under_api_is_404_json(api: Api, service: str, path: str) -> None:
    assert_json_error(api.get(service, path), 404)


@pytest.mark.parametrize(
    ("method", "service", "path"),
    [
        ("DELETE", "order", "/api/orders/"),
        ("PUT", "order", "/api/orders/"),
        ("PATCH", "order", f"/api/orders/{uuid.UUID(int=1)}/"),
        ("DELETE", "order", f"/api/orders/{uuid.UUID(int=1)}/"),
        ("POST", "shipping", "/api/shipments/"),
        ("POST", "payment", "/api/payments/"),
        ("DELETE", "inventory", "/api/products/"),
        ("PUT", "payment", "/api/accounts/"),
    ],
)
def test_wrong_method_is_405_json(api: Api, method: str, service: str, path: str) -> None:
    body = assert_json_error(api.request(method, service, path, json={}), 405)
    assert method in body["message"]


# -- order placement: bad input creates nothing -----------------------------------

Case = Callable[[str], dict[str, Any]]


def json_case(**overrides: Any) -> Case:
    return lambda customer: {"json": {**order_body(customer), **overrides}}


def without(field: str) -> Case:
    def make(customer: str) -> dict[str, Any]:
        body = order_body(customer)
        del body[field]
        return {"json": body}

    return make


def items(*lines: dict[str, Any]) -> Case:
    return json_case(items=list(lines))


def lines(count: int) -> Case:
    return json_case(items=[{"sku": f"sku-{i}", "quantity": 1} for i in range(count)])


def address(**fields: Any) -> Case:
    return json_case(shipping_address=fields)


def raw(data: bytes | str, content_type: str = "application/json") -> Case:
    return lambda customer: {"data": data, "headers": {"Content-Type": content_type}}


BAD_ORDERS = [
    # (id, request, status, field path named in ``fields`` or None)
    ("missing-customer_id", without("customer_id"), 400, ("customer_id",)),
    ("missing-items", without("items"), 400, ("items",)),
    ("missing-shipping_address", without("shipping_address"), 400, ("shipping_address",)),
    ("empty-items", items(), 400, ("items",)),
    ("items-not-a-list", json_case(items={"sku": "a", "quantity": 1}), 400, ("items",)),
    ("quantity-0", items({"sku": "a", "quantity": 0}), 400, ("items", "0", "quantity")),
    ("quantity-negative", items({"sku": "a", "quantity": -3}), 400, ("items", "0", "quantity")),
    ("quantity-10001", items({"sku": "a", "quantity": 10_001}), 400, ("items", "0", "quantity")),
    ("quantity-1.5", items({"sku": "a", "quantity": 1.5}), 400, ("items", "0", "quantity")),
    ("quantity-abc", items({"sku": "a", "quantity": "abc"}), 400, ("items", "0", "quantity")),
    ("quantity-string-5", items({"sku": "a", "quantity": "5"}), 400, ("items", "0", "quantity")),
    ("quantity-true", items({"sku": "a", "quantity": True}), 400, ("items", "0", "quantity")),
    ("quantity-null", items({"sku": "a", "quantity": None}), 400, ("items", "0", "quantity")),
    ("quantity-missing", items({"sku": "a"}), 400, ("items", "0", "quantity")),
    (
        "second-line-bad",
        items({"sku": "a", "quantity": 1}, {"sku": "b", "quantity": 0}),
        400,
        ("items", "1", "quantity"),
    ),
    ("101-lines", lines(101), 400, ("items",)),
    ("10000-lines", lines(10_000), 400, ("items",)),
    ("repeated-sku", items({"sku": "a", "quantity": 1}, {"sku": "a", "quantity": 2}), 400, ("items",)),
    ("sku-65-chars", items({"sku": "s" * 65, "quantity": 1}), 400, ("items", "0", "sku")),
    ("sku-empty", items({"sku": "", "quantity": 1}), 400, ("items", "0", "sku")),
    ("sku-number", items({"sku": 12, "quantity": 1}), 400, ("items", "0", "sku")),
    ("customer_id-65-chars", lambda c: {"json": order_body(c + "x" * (65 - len(c)))}, 400, ("customer_id",)),
    ("customer_id-empty", json_case(customer_id=""), 400, ("customer_id",)),
    ("customer_id-number", json_case(customer_id=12345), 400, ("customer_id",)),
    ("country-lower-case", address(country="fr"), 400, ("shipping_address", "country")),
    ("country-3-letters", address(country="FRA"), 400, ("shipping_address", "country")),
    ("country-missing", address(city="Paris"), 400, ("shipping_address", "country")),
    ("country-null", address(country=None), 400, ("shipping_address", "country")),
    ("address-not-an-object", json_case(shipping_address="FR"), 400, ("shipping_address",)),
    ("name-201-chars", address(country="FR", name="n" * 201), 400, ("shipping_address", "name")),
    ("line1-201-chars", address(country="FR", line1="l" * 201), 400, ("shipping_address", "line1")),
    ("city-201-chars", address(country="FR", city="c" * 201), 400, ("shipping_address", "city")),
    (
        "postal_code-201-chars",
        address(country="FR", postal_code="9" * 201),
        400,
        ("shipping_address", "postal_code"),
    ),
    ("address-field-number", address(country="FR", city=75), 400, ("shipping_address", "city")),
    ("non-json-body", raw("this is not json"), 400, None),
    ("truncated-json", raw('{"customer_id": "x", "items": ['), 400, None),
    ("empty-body", raw(""), 400, None),
    ("json-array-body", raw("[]"), 400, None),
    ("json-string-body", raw('"hello"'), 400, None),
    (
        "wrong-content-type",
        lambda c: {"data": json.dumps(order_body(c)), "headers": {"Content-Type": "text/plain"}},
        415,
        None,
    ),
    ("form-encoded", lambda c: {"data": {"customer_id": c}}, 415, None),
]


@pytest.mark.parametrize(
    ("make", "status", "field"),
    [pytest.param(make, status, field, id=name) for name, make, status, field in BAD_ORDERS],
)
def test_bad_order_is_refused_and_creates_nothing(
    api: Api, make: Case, status: int, field: tuple[str, ...] | None
) -> None:
    customer = new_customer()
    request = make(customer)
    assert order_count(api, customer) == 0
    response = api.post("order", "/api/orders/", **request)
    body = assert_json_error(response, status)
    if field is not None:
        assert_names_field(body, field)
    assert order_count(api, customer) == 0


def test_missing_fields_are_all_named(api: Api) -> None:
    body = assert_json_error(api.post("order", "/api/orders/", json={}), 400)
    assert set(body["fields"]) == {"customer_id", "items", "shipping_address"}, body
    for field in ("customer_id", "items", "shipping_address"):
        assert field in body["message"]


def test_repeated_sku_message_names_the_sku(api: Api) -> None:
    customer = new_customer()
    body = order_body(customer, items=[{"sku": "dup-sku", "quantity": 1}, {"sku": "dup-sku", "quantity": 1}])
    error = assert_json_error(api.post("order", "/api/orders/", json=body), 400)
    assert "dup-sku" in error["message"]
    assert order_count(api, customer) == 0


def test_body_over_1_mib_is_refused(api: Api) -> None:
    customer = new_customer()
    body = order_body(customer, shipping_address={"country": "FR", "name": "x" * (1024 * 1024)})
    error = assert_json_error(api.post("order", "/api/orders/", json=body), (400, 413))
    assert "limit" in error["message"].lower() or "large" in error["message"].lower(), error
    assert order_count(api, customer) == 0


def test_chunked_body_over_1_mib_is_refused(api: Api) -> None:
    """Without a Content-Length the size cannot be checked up front: refused, not misread."""
    customer = new_customer()
    data = json.dumps(order_body(customer, shipping_address={"country": "FR", "name": "x" * (2 << 20)}))
    chunks = (data[i : i + 65536].encode() for i in range(0, len(data), 65536))
    response = api.post("order", "/api/orders/", data=chunks, headers={"Content-Type": "application/json"})
    body = assert_json_error(response, (411, 413))
    assert "Content-Length" in body["message"] or "limit" in body["message"], body
    assert order_count(api, customer) == 0


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param({"items": [{"sku": "s" * 64, "quantity": 10_000}]}, id="sku-64-quantity-10000"),
        pytest.param({"items": [{"sku": f"s{i}", "quantity": 1} for i in range(100)]}, id="100-lines"),
        pytest.param(
            {
                "shipping_address": {
                    "country": "DE",
                    "name": "n" * 200,
                    "line1": "l" * 200,
                    "city": "c" * 200,
                    "postal_code": "p" * 200,
                }
            },
            id="address-fields-200",
        ),
    ],
)
def test_order_at_the_limits_is_accepted(api: Api, overrides: dict[str, Any]) -> None:
    customer = new_customer()
    response = api.post("order", "/api/orders/", json=order_body(customer, **overrides))
    assert response.status_code == 201, response.text[:500]
    order = response.json()
    assert order["status"] == "PENDING"
    assert order["customer_id"] == customer
    assert len(order["items"]) == len(overrides.get("items", [None]))
    assert order_count(api, customer) == 1


def test_customer_id_of_64_chars_is_accepted(api: Api) -> None:
    customer = new_customer()
    customer += "x" * (64 - len(customer))
    response = api.post("order", "/api/orders/", json=order_body(customer))
    assert response.status_code == 201, response.text
    assert order_count(api, customer) == 1


# -- Idempotency-Key --------------------------------------------------------------


def test_idempotent_replay_returns_the_same_order(api: Api) -> None:
    customer = new_customer()
    key = f"key-{uuid.uuid4()}"
    body = order_body(customer, items=[{"sku": "b", "quantity": 2}, {"sku": "a", "quantity": 1}])
    first = api.post("order", "/api/orders/", json=body, headers={"Idempotency-Key": key})
    assert first.status_code == 201, first.text
    second = api.post("order", "/api/orders/", json=body, headers={"Idempotency-Key": key})
    assert second.status_code in (200, 201), second.text
    assert second.json()["id"] == first.json()["id"]
    assert order_count(api, customer) == 1


def test_idempotency_key_reused_with_a_different_body_is_409(api: Api) -> None:
    customer = new_customer()
    key = f"key-{uuid.uuid4()}"
    first = api.post("order", "/api/orders/", json=order_body(customer), headers={"Idempotency-Key": key})
    assert first.status_code == 201, first.text
    changed = order_body(customer, items=[{"sku": "sku-a", "quantity": 2}])
    response = api.post("order", "/api/orders/", json=changed, headers={"Idempotency-Key": key})
    body = assert_json_error(response, 409)
    assert "Idempotency-Key" in body["message"]
    assert "different" in body["message"]
    assert order_count(api, customer) == 1
    assert [item["quantity"] for item in api.order(first.json()["id"])["items"]] == [1]


def test_idempotency_key_of_256_chars_is_400(api: Api) -> None:
    customer = new_customer()
    response = api.post(
        "order", "/api/orders/", json=order_body(customer), headers={"Idempotency-Key": "k" * 256}
    )
    body = assert_json_error(response, 400)
    assert "Idempotency-Key" in body["message"]
    assert order_count(api, customer) == 0


def test_idempotency_key_of_255_chars_is_accepted(api: Api) -> None:
    customer = new_customer()
    key = (uuid.uuid4().hex * 8)[:255]
    response = api.post("order", "/api/orders/", json=order_body(customer), headers={"Idempotency-Key": key})
    assert response.status_code == 201, response.text
    assert order_count(api, customer) == 1


def test_different_keys_make_different_orders(api: Api) -> None:
    customer = new_customer()
    body = order_body(customer)
    ids = {
        api.post("order", "/api/orders/", json=body, headers={"Idempotency-Key": f"k-{uuid.uuid4()}"}).json()[
            "id"
        ]
        for _ in range(2)
    }
    assert len(ids) == 2
    assert order_count(api, customer) == 2


# -- pagination and filters -------------------------------------------------------


@pytest.mark.parametrize(("service", "path"), ALL_LISTS)
def test_lists_are_paginated(api: Api, service: str, path: str) -> None:
    response = api.get(service, path)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == LIST_KEYS, body.keys()
    assert isinstance(body["count"], int)
    assert isinstance(body["results"], list)
    assert len(body["results"]) <= body["count"]


def test_orders_newest_first_and_pages_link(api: Api) -> None:
    customer = new_customer()
    placed = [api.place(customer, [(f"sku-{i}", 1)])["id"] for i in range(3)]
    response = api.get("order", "/api/orders/", params={"customer_id": customer, "page_size": 2})
    assert response.status_code == 200, response.text
    page1 = response.json()
    assert page1["count"] == 3
    assert page1["previous"] is None
    assert page1["next"]
    assert [o["id"] for o in page1["results"]] == [placed[2], placed[1]]
    page2 = api.session.get(page1["next"], timeout=30).json()
    assert [o["id"] for o in page2["results"]] == [placed[0]]
    assert page2["next"] is None
    assert page2["previous"]


@pytest.mark.parametrize("value", ["bogus", "pending", "PENDING,COMPLETED"])
def test_order_status_filter_invalid_is_400(api: Api, value: str) -> None:
    body = assert_json_error(api.get("order", "/api/orders/", params={"status": value}), 400)
    assert_names_field(body, ("status",))


def test_order_status_filter_valid(api: Api) -> None:
    customer = new_customer()
    order = api.place(customer, [(new_sku(), 1)])  # an unknown sku: inventory rejects it
    assert api.wait_terminal(order["id"])["status"] == "REJECTED"
    for status, expected in (("REJECTED", [order["id"]]), ("COMPLETED", []), ("PENDING", [])):
        response = api.get("order", "/api/orders/", params={"customer_id": customer, "status": status})
        assert response.status_code == 200, response.text
        assert [o["id"] for o in response.json()["results"]] == expected, status


def test_page_out_of_range_is_404_json(api: Api) -> None:
    assert_json_error(api.get("order", "/api/orders/", params={"page": 100_000}), 404)


# -- inventory --------------------------------------------------------------------


def new_sku() -> str:
    return f"sku-{uuid.uuid4().hex[:12]}"


def test_product_create_and_read(api: Api) -> None:
    sku = new_sku()
    response = api.post(
        "inventory", "/api/products/", json={"sku": sku, "name": "Widget", "price": "2.5", "available": 7}
    )
    assert response.status_code == 201, response.text
    created = response.json()
    assert created["price"] == "2.50"
    assert created["available"] == 7
    assert created["reserved"] == 0
    read = api.stock(sku)
    assert read["sku"] == sku
    assert isinstance(read["price"], str), read
    assert MONEY.match(read["price"]), read
    assert read["price"] == "2.50"


def test_product_duplicate_sku_is_409(api: Api) -> None:
    sku = api.product(price="1.00", available=5)
    response = api.post(
        "inventory", "/api/products/", json={"sku": sku, "name": "again", "price": "9.99", "available": 1}
    )
    body = assert_json_error(response, 409)
    assert sku in body["message"]
    assert api.stock(sku)["price"] == "1.00"


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        pytest.param({"price": "-0.01"}, "price", id="negative-price"),
        pytest.param({"price": "1.234"}, "price", id="price-3-decimals"),
        pytest.param({"price": "abc"}, "price", id="price-abc"),
        pytest.param({"available": -1}, "available", id="negative-available"),
        pytest.param({"available": 1.5}, "available", id="available-1.5"),
        pytest.param({"sku": ""}, "sku", id="empty-sku"),
        pytest.param({"sku": "s" * 65}, "sku", id="sku-65"),
        pytest.param({"sku": 12345}, "sku", id="sku-number"),
        pytest.param({"name": ""}, "name", id="empty-name"),
        pytest.param({"available": "5"}, "available", id="available-string"),
        pytest.param({"name": "n" * 201}, "name", id="name-201"),
        pytest.param({"available": 1_000_000_001}, "available", id="available-over-a-billion"),
        pytest.param({"price": "12345678901.00"}, "price", id="price-11-integer-digits"),
        pytest.param({"price": 1.5}, "price", id="price-as-a-float"),
        pytest.param({"price": "NaN"}, "price", id="price-nan"),
        pytest.param({"price": "1e3"}, "price", id="price-exponent"),
    ],
)
def test_product_bad_input_is_400(api: Api, overrides: dict[str, Any], field: str) -> None:
    sku = new_sku()
    body = {"sku": sku, "name": "Widget", "price": "1.00", "available": 1, **overrides}
    assert_create_refused(api, "inventory", "/api/products/", body, field, key=sku)


def assert_create_refused(api: Api, service: str, path: str, body: dict, field: str, *, key: Any) -> None:
    """A 400 naming ``field``, and nothing created under ``key``."""
    error = assert_json_error(api.post(service, path, json=body), 400)
    assert_names_field(error, (field,))
    assert_json_error(api.get(service, f"{path}{key}/"), 404)


@pytest.mark.parametrize(
    ("service", "collection", "new_key"),
    [
        ("inventory", "/api/products/", new_sku),
        ("payment", "/api/accounts/", new_customer),
    ],
    ids=["product", "account"],
)
def test_unknown_resource_is_404(api: Api, service: str, collection: str, new_key: Any) -> None:
    key = new_key()
    body = assert_json_error(api.get(service, f"{collection}{key}/"), 404)
    assert key in body["message"]


RECORDS_OF_ORDERS = [
    ("inventory", "/api/reservations/"),
    ("payment", "/api/payments/"),
    ("shipping", "/api/shipments/"),
]


@pytest.mark.parametrize(("service", "collection"), RECORDS_OF_ORDERS)
def test_records_filter_bad_uuid_is_400(api: Api, service: str, collection: str) -> None:
    response = api.get(service, collection, params={"order_id": "not-a-uuid"})
    assert_names_field(assert_json_error(response, 400), ("order_id",))


@pytest.mark.parametrize(("service", "collection"), RECORDS_OF_ORDERS)
def test_records_filter_unknown_order_is_empty(api: Api, service: str, collection: str) -> None:
    response = api.get(service, collection, params={"order_id": str(uuid.uuid4())})
    assert response.status_code == 200, response.text
    assert response.json() == {"count": 0, "next": None, "previous": None, "results": []}


# -- payment ----------------------------------------------------------------------


def test_account_create_and_read(api: Api) -> None:
    customer = new_customer()
    response = api.post("payment", "/api/accounts/", json={"customer_id": customer, "balance": "10"})
    assert response.status_code == 201, response.text
    assert response.json() == {"customer_id": customer, "balance": "10.00"}
    read = api.get("payment", f"/api/accounts/{customer}/")
    assert read.status_code == 200, read.text
    assert read.json()["balance"] == "10.00"
    assert MONEY.match(read.json()["balance"])


def test_account_duplicate_is_409(api: Api) -> None:
    customer = api.account(balance="5.00")
    response = api.post("payment", "/api/accounts/", json={"customer_id": customer, "balance": "99.00"})
    body = assert_json_error(response, 409)
    assert customer in body["message"]
    assert str(api.balance(customer)) == "5.00"


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        pytest.param({"balance": "-1.00"}, "balance", id="negative-balance"),
        pytest.param({"balance": "1.001"}, "balance", id="balance-3-decimals"),
        pytest.param({"balance": "lots"}, "balance", id="balance-not-a-number"),
        pytest.param({"balance": None}, "balance", id="balance-null"),
        pytest.param({"customer_id": ""}, "customer_id", id="empty-customer_id"),
        pytest.param({"customer_id": "c" * 65}, "customer_id", id="customer_id-65"),
        pytest.param({"balance": "1234567890123.00"}, "balance", id="balance-13-integer-digits"),
        pytest.param({"balance": 10.5}, "balance", id="balance-as-a-float"),
        pytest.param({"balance": "Infinity"}, "balance", id="balance-infinity"),
    ],
)
def test_account_bad_input_is_400(api: Api, overrides: dict[str, Any], field: str) -> None:
    customer = new_customer()
    body = {"customer_id": customer, "balance": "1.00", **overrides}
    assert_create_refused(api, "payment", "/api/accounts/", body, field, key=customer)


def test_account_customer_id_must_be_a_string(api: Api) -> None:
    number = int(uuid.uuid4().int % 10**12)
    body = {"customer_id": number, "balance": "1.00"}
    assert_create_refused(api, "payment", "/api/accounts/", body, "customer_id", key=number)


@pytest.mark.parametrize("reason", ["r" * 201, "", 42], ids=["reason-201", "reason-empty", "reason-number"])
def test_cancel_reason_out_of_bounds_is_400_and_cancels_nothing(api: Api, reason: Any) -> None:
    customer = api.account()
    sku = api.product(available=5)
    order = api.place(customer, [(sku, 1)])
    response = api.post("order", f"/api/orders/{order['id']}/cancel/", json={"reason": reason})
    assert_names_field(assert_json_error(response, 400), ("reason",))
    assert api.wait_terminal(order["id"])["status"] == "COMPLETED"
