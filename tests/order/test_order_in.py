"""The POST's fast validation (``order_in``) against the serializer that has the last word.

Whatever ``order_in`` accepts, ``OrderInSerializer`` must accept with the same data (same
keys in the same order: the data is fingerprinted for Idempotency-Key and sent in
OrderPlaced); whatever it declines goes through the serializer unchanged.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from order_svc.orders.api import MAX_LINES, MAX_QUANTITY, OrderInSerializer, fingerprint, order_in

# Text that exercises the edges: blanks, NUL, surrogates, tabs, newlines, non-ASCII, long.
text = st.one_of(
    st.text(max_size=70),
    st.sampled_from(["", " ", "a\x00b", "\ud800", "tab\there", "line\n", "Zoë"]),
    st.sampled_from(["x" * 64, "x" * 65, "x" * 200, "x" * 201]),
)
scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-2, max_value=MAX_QUANTITY + 2),
    st.floats(allow_nan=False, min_value=-2, max_value=MAX_QUANTITY + 2),
    text,
)
sku = st.one_of(st.sampled_from(["A", "B", "C", "sku-1"]), text, scalar)
quantity = st.one_of(st.integers(min_value=1, max_value=MAX_QUANTITY), scalar)
item = st.one_of(
    st.fixed_dictionaries({"sku": sku, "quantity": quantity}),
    st.fixed_dictionaries({"sku": sku, "quantity": quantity}, optional={"extra": scalar, "price": scalar}),
    st.fixed_dictionaries({}, optional={"sku": sku, "quantity": quantity}),
    scalar,
)
address = st.one_of(
    st.fixed_dictionaries(
        {"country": st.one_of(st.sampled_from(["FR", "DE", "AQ", "fr", "F", "FRA", "FR\n", " FR"]), scalar)},
        optional={
            "name": st.one_of(text, scalar),
            "line1": text,
            "city": text,
            "postal_code": st.one_of(text, scalar),
            "floor": scalar,
        },
    ),
    scalar,
)
body = st.one_of(
    st.fixed_dictionaries(
        {
            "customer_id": st.one_of(st.sampled_from(["c-1", "cust"]), text, scalar),
            "items": st.one_of(st.lists(item, max_size=4), scalar),
            "shipping_address": address,
        },
        optional={"note": scalar},
    ),
    st.lists(scalar, max_size=2),
    scalar,
)


def assert_agrees(data: Any) -> None:
    fast = order_in(data)
    if fast is None:
        return
    incoming = OrderInSerializer(data=data)
    assert incoming.is_valid(), f"order_in accepted what the serializer refuses: {data!r}"
    assert json.dumps(fast) == json.dumps(incoming.validated_data)  # key order included
    assert fingerprint(fast) == fingerprint(incoming.validated_data)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body)
@example(
    {"customer_id": "c", "items": [{"sku": "A", "quantity": 1.0}], "shipping_address": {"country": "FR"}}
)
@example(
    {"customer_id": "c", "items": [{"sku": "A", "quantity": True}], "shipping_address": {"country": "FR"}}
)
def test_order_in_accepts_only_what_the_serializer_accepts_with_the_same_data(data: Any) -> None:
    assert_agrees(data)


def valid(**changes: Any) -> dict[str, Any]:
    data = {
        "customer_id": "cust-1",
        "items": [{"sku": "B", "quantity": 2}, {"sku": "A", "quantity": MAX_QUANTITY}],
        "shipping_address": {"postal_code": "75001", "country": "FR", "city": "Paris", "name": ""},
    }
    data.update(changes)
    return data


def test_order_in_takes_the_usual_orders():
    """The fast path is taken for ordinary orders (else it would save nothing)."""
    for data in (
        valid(),
        valid(shipping_address={"country": "AQ"}),
        valid(items=[{"sku": f"s{i}", "quantity": 1} for i in range(MAX_LINES)]),
        valid(customer_id="x" * 64, shipping_address={"country": "DE", "line1": "Straße 1 · Hof"}),
    ):
        fast = order_in(data)
        assert fast is not None, data
        assert_agrees(data)
    # The serializer's order of the address fields, whatever the client's.
    assert list(order_in(valid())["shipping_address"]) == ["country", "name", "city", "postal_code"]


@pytest.mark.parametrize(
    "data",
    [
        valid(items=[]),
        valid(items=[{"sku": "A", "quantity": 1}, {"sku": "A", "quantity": 2}]),
        valid(items=[{"sku": "A", "quantity": 0}]),
        valid(items=[{"sku": "A", "quantity": MAX_QUANTITY + 1}]),
        valid(items=[{"sku": "A", "quantity": "1"}]),
        valid(items=[{"sku": "A", "quantity": 1.0}]),  # the serializer takes it as 1
        valid(items=[{"sku": "", "quantity": 1}]),
        valid(items=[{"sku": "x" * 65, "quantity": 1}]),
        valid(items=[{"sku": "a\x00", "quantity": 1}]),
        valid(items=[{"sku": f"s{i}", "quantity": 1} for i in range(MAX_LINES + 1)]),
        valid(customer_id=""),
        valid(customer_id=7),
        valid(shipping_address={"country": "fr"}),
        valid(shipping_address={"country": "FR", "floor": "3"}),  # the serializer drops the key
        valid(shipping_address={"country": "FR", "city": "x" * 201}),
        valid(shipping_address={"country": "FR", "city": "tab\t"}),
        valid(note="hello"),
        [],
        None,
    ],
)
def test_order_in_leaves_the_rest_to_the_serializer(data: Any) -> None:
    assert order_in(data) is None
