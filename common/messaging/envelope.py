"""The event envelope every message carries (SPEC §2), as JSON.

Pure code: no Django, no broker. ``Envelope.from_json`` is strict; whatever it
rejects raises :class:`EnvelopeError` with a reason an operator can act on.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from common.messaging.ids import new_id_str

SCHEMA_VERSION = 1
ENVELOPE_FIELDS = (
    "event_id",
    "event_type",
    "saga_id",
    "occurred_at",
    "producer",
    "causation_id",
    "trace",
    "schema_version",
    "payload",
)
_EVENT_TYPE_RE = re.compile(r"^[A-Z][a-z]+(?:[A-Z][a-z]+)+$")
_CAMEL_SPLIT_RE = re.compile(r"(?<!^)(?=[A-Z])")


class EnvelopeError(ValueError):
    """A message that is not a valid event envelope; the message says why."""


def routing_key_for(event_type: str) -> str:
    """``InventoryReserved`` → ``inventory.reserved`` (STYLE: lower-case dotted)."""
    if not _EVENT_TYPE_RE.match(event_type):
        raise EnvelopeError(f"event_type {event_type!r} is not <Subject><PastTenseVerb>")
    return _CAMEL_SPLIT_RE.sub(".", event_type).lower()


def utcnow() -> datetime:
    return datetime.now(tz=UTC)


@dataclass(frozen=True)
class Envelope:
    event_type: str
    saga_id: str
    producer: str
    payload: dict[str, Any]
    causation_id: str | None = None
    trace: dict[str, str] = field(default_factory=dict)
    event_id: str = field(default_factory=new_id_str)
    occurred_at: datetime = field(default_factory=utcnow)
    schema_version: int = SCHEMA_VERSION

    @property
    def routing_key(self) -> str:
        return routing_key_for(self.event_type)

    def to_dict(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "event_type": self.event_type,
            "saga_id": self.saga_id,
            "occurred_at": self.occurred_at.isoformat(),
            "producer": self.producer,
            "causation_id": self.causation_id,
            "trace": dict(self.trace),
            "schema_version": self.schema_version,
            "payload": self.payload,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(cls, raw: bytes | str) -> Envelope:
        return cls.from_dict(loads(raw))

    @classmethod
    def from_dict(cls, data: Any) -> Envelope:
        if not isinstance(data, dict):
            raise EnvelopeError(f"envelope must be a JSON object, got {type(data).__name__}")
        missing = [name for name in ENVELOPE_FIELDS if name not in data]
        if missing:
            raise EnvelopeError(f"envelope is missing field(s): {', '.join(missing)}")
        unknown = sorted(set(data) - set(ENVELOPE_FIELDS))
        if unknown:
            raise EnvelopeError(f"envelope has unknown field(s): {', '.join(unknown)}")
        event_id = _uuid_field(data, "event_id")
        saga_id = _uuid_field(data, "saga_id")
        causation_id = None if data["causation_id"] is None else _uuid_field(data, "causation_id")
        event_type = data["event_type"]
        if not isinstance(event_type, str) or not _EVENT_TYPE_RE.match(event_type):
            raise EnvelopeError(f"event_type {event_type!r} is not a valid event type name")
        producer = data["producer"]
        if not isinstance(producer, str) or not producer:
            raise EnvelopeError("producer must be a non-empty string")
        version = data["schema_version"]
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise EnvelopeError(f"schema_version {version!r} must be a positive integer")
        trace = data["trace"]
        if not isinstance(trace, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in trace.items()
        ):
            raise EnvelopeError("trace must be an object of strings (W3C traceparent)")
        payload = data["payload"]
        if not isinstance(payload, dict):
            raise EnvelopeError("payload must be a JSON object")
        occurred_raw = data["occurred_at"]
        try:
            occurred_at = datetime.fromisoformat(occurred_raw)
        except (TypeError, ValueError) as exc:
            raise EnvelopeError(f"occurred_at {occurred_raw!r} is not an ISO 8601 time") from exc
        if occurred_at.tzinfo is None:
            raise EnvelopeError(f"occurred_at {occurred_raw!r} has no time zone")
        return cls(
            event_id=event_id,
            event_type=event_type,
            saga_id=saga_id,
            occurred_at=occurred_at,
            producer=producer,
            causation_id=causation_id,
            trace=trace,
            schema_version=version,
            payload=payload,
        )


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def loads(raw: bytes | str) -> Any:
    """Strict ``json.loads`` for untrusted bodies: EnvelopeError for anything that is not JSON.

    That includes what Python's json would accept or die on: ``NaN``/``Infinity``, and
    nesting deep enough to exhaust the recursion limit (a RecursionError would escape
    every ``except ValueError`` and make a worker requeue the message forever).
    """
    try:
        return json.loads(raw, parse_constant=_refuse_constant)
    except (UnicodeDecodeError, ValueError) as exc:
        raise EnvelopeError(f"body is not valid JSON: {exc}") from exc
    except RecursionError as exc:
        raise EnvelopeError("body is not valid JSON: nested too deeply") from exc


def _uuid_field(data: dict[str, Any], name: str) -> str:
    value = data[name]
    try:
        return str(uuid.UUID(str(value))) if isinstance(value, str) else _raise_uuid(name, value)
    except ValueError as exc:
        raise EnvelopeError(f"{name} {value!r} is not a UUID") from exc


def _raise_uuid(name: str, value: Any) -> str:
    raise EnvelopeError(f"{name} {value!r} is not a UUID")
