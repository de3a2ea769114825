from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from common.messaging import contracts
from common.messaging.contracts import known_event_types, validate_payload
from common.messaging.envelope import ENVELOPE_FIELDS, Envelope, EnvelopeError, routing_key_for


def make(**overrides: object) -> dict:
    envelope = Envelope(
        event_type="OrderPlaced",
        saga_id=str(uuid.uuid4()),
        producer="order",
        payload={
            "customer_id": "c",
            "items": [{"sku": "a", "quantity": 1}],
            "shipping_address": {"country": "FR"},
        },
        causation_id=None,
        trace={"traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01"},
    ).to_dict()
    envelope.update(overrides)
    return envelope


def test_round_trip_keeps_every_field() -> None:
    original = Envelope.from_dict(make())
    decoded = Envelope.from_json(original.to_json())
    assert decoded == original
    assert set(json.loads(original.to_json())) == set(ENVELOPE_FIELDS)
    assert decoded.occurred_at.tzinfo is not None


@pytest.mark.parametrize(
    ("event_type", "key"),
    [
        ("OrderPlaced", "order.placed"),
        ("InventoryReserved", "inventory.reserved"),
        ("PaymentDeclined", "payment.declined"),
        ("ShipmentScheduled", "shipment.scheduled"),
    ],
)
def test_routing_key_is_lower_case_dotted(event_type: str, key: str) -> None:
    assert routing_key_for(event_type) == key


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"{not json", "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (json.dumps({"event_id": str(uuid.uuid4())}).encode(), "missing field"),
        (json.dumps(make(event_id="nope")).encode(), "event_id 'nope' is not a UUID"),
        (json.dumps(make(saga_id=12)).encode(), "saga_id 12 is not a UUID"),
        (json.dumps(make(event_type="order_placed")).encode(), "not a valid event type"),
        (json.dumps(make(occurred_at="yesterday")).encode(), "not an ISO 8601"),
        (json.dumps(make(occurred_at="2026-01-01T00:00:00")).encode(), "no time zone"),
        (json.dumps(make(payload=[1])).encode(), "payload must be a JSON object"),
        (json.dumps(make(schema_version=0)).encode(), "schema_version"),
        (json.dumps(make(trace="x")).encode(), "trace must be"),
        (json.dumps({**make(), "extra": 1}).encode(), "unknown field"),
        (b"[" * 100_000, "nested too deeply"),  # a RecursionError would escape the consumer
        (b'{"a":' * 100_000, "nested too deeply"),
        (json.dumps(make()).replace('"quantity": 1', '"quantity": NaN').encode(), "NaN is not JSON"),
        (b"Infinity", "Infinity is not JSON"),
        (b"9" * 5000, "not valid JSON"),
    ],
)
def test_malformed_envelopes_are_rejected_with_a_reason(raw: bytes, reason: str) -> None:
    with pytest.raises(EnvelopeError, match=reason):
        Envelope.from_json(raw)


def test_payload_is_checked_against_its_contract() -> None:
    validate_payload("OrderPlaced", 1, make()["payload"])
    with pytest.raises(EnvelopeError, match="items/0/quantity"):
        validate_payload(
            "OrderPlaced",
            1,
            {
                "customer_id": "c",
                "items": [{"sku": "a", "quantity": 0}],
                "shipping_address": {"country": "FR"},
            },
        )
    with pytest.raises(EnvelopeError, match="no contract for Unheard"):
        validate_payload("UnheardOf", 1, {})


def test_every_contract_names_a_well_formed_event_type() -> None:
    assert "OrderPlaced" in known_event_types()
    for event_type in known_event_types():
        routing_key_for(event_type)


def test_occurred_at_is_aware_utc_by_default() -> None:
    envelope = Envelope(event_type="OrderCompleted", saga_id=str(uuid.uuid4()), producer="order", payload={})
    assert envelope.occurred_at <= datetime.now(tz=UTC)
    assert envelope.occurred_at.utcoffset().total_seconds() == 0


SAMPLES = {  # a value matching each pattern the contracts use
    r"^[A-Z]{2}$": "FR",
    r"^\d{1,12}\.\d{2}$": "12.50",
    "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$": "0b7e5b1e-3f0c-4a8e-9d7e-1c2b3a4d5e6f",
}
WRONG = [
    None,
    True,
    0,
    1,
    -1,
    1.5,
    1e308,
    "",
    "x",
    "x" * 5000,
    "FR\n",
    "12.5",
    "1" * 13 + ".00",
    [],
    [1],
    {},
    {"a": 1},
]


def minimal(schema: dict) -> object:
    """A valid instance of ``schema`` (the keywords the contracts use), every property present."""
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type")
    kind = kind[0] if isinstance(kind, list) else kind
    if kind == "object":
        return {name: minimal(sub) for name, sub in schema.get("properties", {}).items()}
    if kind == "array":
        return [minimal(schema["items"]) for _ in range(max(1, schema.get("minItems", 1)))]
    if kind == "string":
        return SAMPLES.get(schema.get("pattern"), "x" * max(1, schema.get("minLength", 1)))
    if kind in ("integer", "number"):
        return schema.get("minimum", 1)
    if kind == "boolean":
        return True
    return None


def mutations(value: object) -> Iterator[object]:
    """Copies of ``value`` with one thing wrong: a key removed or a value replaced, anywhere."""
    yield from WRONG
    if isinstance(value, dict):
        for key in value:
            yield {k: v for k, v in value.items() if k != key}
            for wrong in mutations(value[key]):
                yield {**value, key: wrong}
        yield {**value, "unexpected": 1}
    elif isinstance(value, list) and value:
        yield []
        yield value * 200
        for wrong in mutations(value[0]):
            yield [wrong, *value[1:]]


@pytest.mark.parametrize(("event_type", "version"), sorted(contracts._validators()))
def test_the_compiled_contract_never_accepts_what_jsonschema_rejects(event_type: str, version: int) -> None:
    schema = json.loads(contracts.CONTRACTS_FILE.read_text())["events"][event_type][str(version)]
    valid = minimal(schema)
    assert contracts.fast_valid(event_type, version, valid)  # the fast path is taken
    validate_payload(event_type, version, valid)
    checked = rejected = 0
    for payload in mutations(valid):
        strict = not list(contracts._validators()[(event_type, version)].iter_errors(payload))
        if contracts.fast_valid(event_type, version, payload):
            assert strict, f"compiled contract accepted what jsonschema rejects: {payload!r}"
        rejected += not strict
        checked += 1
    assert rejected > checked // 2  # the mutations do break the contract, mostly
