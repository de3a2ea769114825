"""The parking lot: messages a service gave up on, kept for operators to replay or discard.

The consumer publishes them to ``<service>.parked`` (that works while the database is
down); the worker ingests them from there into ``ParkedMessage`` rows. A replay
publishes the original body back to this service's own queue with the attempt count
reset; the row is marked afterwards, so a crash in between can only replay twice,
which the inbox absorbs.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Any

from django.conf import settings
from django.db import transaction

from common.messaging.broker import Publisher, topology
from common.messaging.envelope import Envelope, EnvelopeError, loads
from common.messaging.models import ParkedAction, ParkedMessage, ParkedStatus
from common.messaging.outbox import emit
from common.messaging.registry import NOTICE_EVENTS
from common.messaging.signing import SIGNATURE_HEADER
from common.observability.context import handling

ATTEMPT_HEADER = "x-saga-attempt"
PARK_REASON_HEADER = "x-saga-park-reason"
PARKED_AT_HEADER = "x-saga-parked-at"
PARK_ID_HEADER = "x-saga-park-id"
LAST_ERROR_HEADER = "x-saga-last-error"
ORIGINAL_HEADERS_HEADER = "x-saga-original-headers"
REPLAYED_FROM_HEADER = "x-saga-replayed-from"


class ParkedStateError(Exception):
    """The parked message was already replayed or discarded."""


def _uuid_or_none(value: Any) -> str | None:
    try:
        return str(uuid.UUID(str(value))) if isinstance(value, str) else None
    except ValueError:
        return None


def _peek(body: bytes) -> dict[str, Any]:
    """Best-effort identity of a parked body (it may be anything, that is why it is here)."""
    try:
        data = loads(body)
    except EnvelopeError:
        return {}
    if not isinstance(data, dict):
        return {}
    event_type = data.get("event_type")
    return {
        "event_id": _uuid_or_none(data.get("event_id")),
        "saga_id": _uuid_or_none(data.get("saga_id")),
        "event_type": event_type[:64] if isinstance(event_type, str) else "",
    }


def _dead_letter_reason(headers: dict[str, Any]) -> str:
    """Why the broker itself dead-lettered a message here (quorum queues: past the delivery limit)."""
    reason, queue = headers.get("x-first-death-reason"), headers.get("x-first-death-queue")
    if reason == "delivery_limit":
        return f"delivered too many times from {queue} (SAGA_DELIVERY_LIMIT): it may crash its worker"
    if reason:
        return f"dead-lettered by the broker from {queue}: {reason}"
    return "parked without a reason (dead-lettered)"


def _storable(headers: dict[str, Any]) -> dict[str, Any]:
    """The headers as JSON for the record (whatever a hostile publisher put in them)."""
    try:
        return json.loads(json.dumps(headers, default=str))
    except (RecursionError, ValueError):
        return {"x-saga-unreadable-headers": repr(headers)[:2000]}


def parked_ingest(*, body: bytes, headers: dict[str, Any]) -> ParkedMessage:
    """Record one message from the parked queue; ingesting the same delivery twice is a no-op."""
    park_id = headers.get(PARK_ID_HEADER)
    if isinstance(park_id, str) and park_id:
        key = park_id[:64]
    else:  # dead-lettered by the broker, not parked by us: identify it by its content
        stamp = json.dumps([headers.get(PARK_REASON_HEADER), headers.get("x-death")], default=str)
        key = hashlib.sha256(body + stamp.encode()).hexdigest()
    original = headers.get(ORIGINAL_HEADERS_HEADER)
    try:
        attempts = max(0, int(headers.get(ATTEMPT_HEADER, 0)))
    except (TypeError, ValueError):
        attempts = 0
    with transaction.atomic():
        message, created = ParkedMessage.objects.get_or_create(
            delivery_key=key,
            defaults={
                **_peek(body),
                "reason": str(headers.get(PARK_REASON_HEADER) or _dead_letter_reason(headers)),
                "attempts": attempts,
                "last_error": str(headers.get(LAST_ERROR_HEADER) or ""),
                "headers": _storable(original if isinstance(original, dict) else headers),
                "body": body,
            },
        )
        if created:
            _announce(message)
    return message


def _announce(message: ParkedMessage) -> None:
    """Put the parked step on its saga's timeline (MessageParked), if it belongs to one."""
    try:
        envelope = Envelope.from_json(bytes(message.body))
    except EnvelopeError:
        return  # unreadable: no saga to tell
    if envelope.event_type in NOTICE_EVENTS:
        return
    with handling(envelope):
        emit(
            event_type="MessageParked",
            saga_id=envelope.saga_id,
            payload={
                "service": settings.SERVICE_NAME,
                "event_type": envelope.event_type,
                "event_id": envelope.event_id,
                "attempts": message.attempts,
                "reason": message.reason[:2000],
                "last_error": message.last_error[:2000],
                "parked_id": message.id,
            },
        )


def _record(message: ParkedMessage, *, to: str, action: str, operator: str, note: str) -> ParkedMessage:
    with transaction.atomic():
        changed = ParkedMessage.objects.filter(id=message.id, status=ParkedStatus.PARKED).update(status=to)
        if not changed:
            message.refresh_from_db()
            raise ParkedStateError(f"parked message #{message.id} is already {message.status}")
        ParkedAction.objects.create(message=message, action=action, operator=operator, note=note)
    message.refresh_from_db()
    return message


def parked_replay(*, message_id: int, operator: str, publisher: Publisher | None = None) -> ParkedMessage:
    """Send the message back to this service's queue, attempts reset; record who did it."""
    message = ParkedMessage.objects.get(id=message_id)
    if message.status != ParkedStatus.PARKED:
        raise ParkedStateError(f"parked message #{message.id} is already {message.status}")
    # Our bookkeeping headers go; the producer's signature stays (the body is unchanged).
    headers = {
        k: v for k, v in message.headers.items() if not k.startswith("x-saga-") or k == SIGNATURE_HEADER
    }
    headers.update({ATTEMPT_HEADER: 0, REPLAYED_FROM_HEADER: message.id})
    own = publisher or Publisher()
    try:
        own.publish(
            bytes(message.body),
            exchange="",
            routing_key=topology().events_queue.name,
            headers=headers,
            message_id=str(message.event_id) if message.event_id else None,
            message_type=message.event_type or None,
        )
    finally:
        if publisher is None:
            own.close()
    return _record(message, to=ParkedStatus.REPLAYED, action="replay", operator=operator, note="")


def parked_discard(*, message_id: int, operator: str, note: str = "") -> ParkedMessage:
    """Give up on the message for good; the record stays, with who discarded it and why."""
    message = ParkedMessage.objects.get(id=message_id)
    return _record(message, to=ParkedStatus.DISCARDED, action="discard", operator=operator, note=note)
