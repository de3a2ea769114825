"""The event contracts (``contracts/events.json``): payload schemas by type and version."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import fastjsonschema
from jsonschema import Draft202012Validator

from common.messaging.envelope import Envelope, EnvelopeError

CONTRACTS_FILE = Path(__file__).resolve().parents[2] / "contracts" / "events.json"


@cache
def _validators() -> dict[tuple[str, int], Draft202012Validator]:
    doc = json.loads(CONTRACTS_FILE.read_text())
    return {
        (event_type, int(version)): Draft202012Validator(schema)
        for event_type, versions in doc["events"].items()
        for version, schema in versions.items()
    }


# Draft-07 and 2020-12 agree on every keyword the contracts use (type, properties, required,
# items, enum, pattern, min/max, lengths); formats: jsonschema does not assert them, and
# these are the only ones compiled below, so a fast "valid" is never more lenient.
_FAST_FORMATS = {"uuid": r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"}


@cache
def _fast_validators() -> dict[tuple[str, int], Any]:
    """The same schemas compiled to Python (fastjsonschema): ~15x faster on a valid payload.

    Every event is checked twice (when emitted, when consumed): jsonschema's generic walk was
    ~10 % of a worker's CPU. A payload the compiled check accepts is valid; one it rejects
    goes to jsonschema, which has the final word and the message (tests/unit/test_envelope.py
    checks that the compiled check never accepts what jsonschema rejects).
    """
    doc = json.loads(CONTRACTS_FILE.read_text())
    return {
        (event_type, int(version)): fastjsonschema.compile(
            {key: value for key, value in schema.items() if key != "$schema"}, formats=_FAST_FORMATS
        )
        for event_type, versions in doc["events"].items()
        for version, schema in versions.items()
    }


def fast_valid(event_type: str, schema_version: int, payload: Any) -> bool:
    """True if the compiled contract accepts ``payload`` (False: ask :func:`validate_payload`)."""
    fast = _fast_validators().get((event_type, schema_version))
    if fast is None:
        return False
    try:
        fast(payload)
    except Exception:  # noqa: BLE001 - invalid, or a shape it cannot even walk: jsonschema decides
        return False
    return True


@cache
def _producers() -> dict[str, frozenset[str]]:
    doc = json.loads(CONTRACTS_FILE.read_text())
    return {event_type: frozenset(services) for event_type, services in doc["producers"].items()}


def allowed_producers(event_type: str) -> frozenset[str]:
    """The services allowed to emit ``event_type`` (``producers`` in contracts/events.json)."""
    return _producers().get(event_type, frozenset())


@cache
def latest_version(event_type: str) -> int:
    """The schema_version producers emit for ``event_type`` (consumers accept every listed one)."""
    versions = [version for known, version in _validators() if known == event_type]
    if not versions:
        raise EnvelopeError(f"no contract for {event_type}")
    return max(versions)


def known_event_types() -> set[str]:
    return {event_type for event_type, _ in _validators()}


def validate_payload(event_type: str, schema_version: int, payload: dict[str, Any]) -> None:
    """Raise :class:`EnvelopeError` naming the first problem, if the payload breaks its schema."""
    if fast_valid(event_type, schema_version, payload):
        return
    validator = _validators().get((event_type, schema_version))
    if validator is None:
        raise EnvelopeError(f"no contract for {event_type} schema_version {schema_version}")
    error = next(iter(sorted(validator.iter_errors(payload), key=lambda e: e.path)), None)
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(payload)"
        raise EnvelopeError(f"{event_type} v{schema_version} payload invalid at {where}: {error.message}")


def validate_envelope(envelope: Envelope) -> None:
    validate_payload(envelope.event_type, envelope.schema_version, envelope.payload)
