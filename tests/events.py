"""Building and delivering events in per-service tests (real PostgreSQL, no mocks)."""

from __future__ import annotations

import uuid
from typing import Any

from common.messaging.broker import registry
from common.messaging.consumer import Outcome, process_batch, process_delivery, read_delivery
from common.messaging.envelope import Envelope


def envelope(
    event_type: str,
    saga_id: str,
    payload: dict[str, Any],
    *,
    producer: str | None = None,
    event_id: str | None = None,
    schema_version: int = 1,
) -> Envelope:
    """An event as its producer (by default, the service the contract allows) would emit it."""
    from common.messaging.contracts import allowed_producers

    return Envelope(
        event_type=event_type,
        saga_id=str(saga_id),
        producer=producer or min(allowed_producers(event_type), default="test"),
        payload=payload,
        event_id=event_id or str(uuid.uuid4()),
        schema_version=schema_version,
        trace={"traceparent": "00-" + uuid.uuid4().hex + "-" + uuid.uuid4().hex[:16] + "-01"},
    )


def deliver(event: Envelope | bytes) -> Outcome:
    """Process one delivery exactly as the worker does (inbox, transaction, dispatch)."""
    from django.conf import settings

    body = event if isinstance(event, bytes) else event.to_json().encode()
    return process_delivery(body, events=registry(), service=settings.SERVICE_NAME, signature=signed_as(body))


def deliver_batch(events: list[Envelope]) -> list[Outcome]:
    """Process several deliveries as the worker's group commit does: one transaction for all
    (process_batch raises if any part failed; the worker would then handle each alone)."""
    from django.conf import settings

    items = []
    for event in events:
        body = event.to_json().encode()
        signature = signed_as(body)
        read = read_delivery(body, events=registry(), service=settings.SERVICE_NAME, signature=signature)
        assert not isinstance(read, Outcome), read
        items.append(read)
    return process_batch(items, events=registry(), service=settings.SERVICE_NAME)


def signed_as(body: bytes, producer: str | None = None) -> str:
    """The signature ``producer`` (default: the one the body names) would put on ``body``."""
    import json

    from django.conf import settings

    from common.messaging.signing import signature_of

    if producer is None:
        try:
            named = json.loads(body).get("producer")
        except (ValueError, AttributeError):
            named = None
        producer = named if isinstance(named, str) else settings.SERVICE_NAME
    keys = settings.SAGA_EVENT_KEYS.get(producer) or [b"no key"]
    return signature_of(body, keys[0])


def outbox_events(saga_id: str) -> list[dict[str, Any]]:
    from common.messaging.models import OutboxMessage

    return [
        Envelope.from_json(row.body).to_dict()
        for row in OutboxMessage.objects.filter(saga_id=saga_id).order_by("id")
    ]


def outbox_types(saga_id: str) -> list[str]:
    return [event["event_type"] for event in outbox_events(saga_id)]
