"""Building and delivering events in per-service tests (real PostgreSQL, no mocks)."""

from __future__ import annotations

import uuid
from typing import Any

from common.broker import registry
from common.consumer import Outcome, process_delivery
from common.envelope import Envelope


def envelope(
    event_type: str,
    saga_id: str,
    payload: dict[str, Any],
    *,
    producer: str = "test",
    event_id: str | None = None,
) -> Envelope:
    return Envelope(
        event_type=event_type,
        saga_id=str(saga_id),
        producer=producer,
        payload=payload,
        event_id=event_id or str(uuid.uuid4()),
        trace={"traceparent": "00-" + uuid.uuid4().hex + "-" + uuid.uuid4().hex[:16] + "-01"},
    )


def deliver(event: Envelope | bytes) -> Outcome:
    """Process one delivery exactly as the worker does (inbox, transaction, dispatch)."""
    from django.conf import settings

    body = event if isinstance(event, bytes) else event.to_json().encode()
    return process_delivery(body, events=registry(), service=settings.SERVICE_NAME)


def outbox_events(saga_id: str) -> list[dict[str, Any]]:
    from common.messaging.models import OutboxMessage

    return [
        Envelope.from_json(row.body).to_dict()
        for row in OutboxMessage.objects.filter(saga_id=saga_id).order_by("id")
    ]


def outbox_types(saga_id: str) -> list[str]:
    return [event["event_type"] for event in outbox_events(saga_id)]
