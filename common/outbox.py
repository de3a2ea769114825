"""Emitting events: an outbox row in the caller's transaction, and a NOTIFY.

``emit`` is the only way a service publishes. The row and the state change
commit together or not at all; PostgreSQL delivers the NOTIFY only on commit,
which wakes the relay at once (the fast path). The relay's periodic sweep is
what guarantees delivery if nobody was listening.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import connection

from common.context import current_event, current_trace
from common.contracts import validate_envelope
from common.envelope import Envelope
from common.messaging.models import OutboxMessage


class OutsideTransactionError(RuntimeError):
    """emit() was called outside transaction.atomic(): the event could be lost."""


def notify_channel(service: str) -> str:
    return f"saga_outbox_{service}"


def emit(*, event_type: str, saga_id: str, payload: dict[str, Any]) -> Envelope:
    """Write ``event_type`` for ``saga_id`` to the outbox of this service."""
    if not connection.in_atomic_block:
        raise OutsideTransactionError(
            f"emit({event_type}) must run inside transaction.atomic() with the state change"
        )
    cause = current_event()
    envelope = Envelope(
        event_type=event_type,
        saga_id=str(saga_id),
        producer=settings.SERVICE_NAME,
        payload=payload,
        causation_id=cause.event_id if cause else None,
        trace=current_trace(),
    )
    # A producer never publishes what its consumers would park: check the contract here,
    # inside the transaction, so a violation fails (and is retried/parked) where it was made.
    validate_envelope(envelope)
    OutboxMessage.objects.create(
        event_id=envelope.event_id,
        event_type=envelope.event_type,
        routing_key=envelope.routing_key,
        saga_id=envelope.saga_id,
        body=envelope.to_json(),
        created_at=envelope.occurred_at,
    )
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_notify(%s, '')", [notify_channel(settings.SERVICE_NAME)])
    return envelope
