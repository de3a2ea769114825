"""Emitting events: an outbox row in the caller's transaction.

``emit`` is the only way a service publishes. The row and the state change
commit together or not at all. On commit the process's pusher publishes it
(common/messaging/direct.py), or, with ``SAGA_PUBLISH_ON_COMMIT`` off, a NOTIFY delivered
on commit wakes the relay. The relay's periodic sweep is what guarantees
delivery if neither happened. In a group-commit batch the rows of all its
deliveries are written with one INSERT just before the commit (common/messaging/groupcommit.py).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import connection
from django.utils import timezone

from common.messaging.contracts import allowed_producers, latest_version, validate_envelope
from common.messaging.direct import publish_after_commit
from common.messaging.envelope import Envelope, EnvelopeError
from common.messaging.groupcommit import defer
from common.messaging.models import OutboxMessage
from common.messaging.statements import Statement, statement_cursor
from common.observability.context import current_event
from common.observability.tracing import current_trace


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
    if settings.SERVICE_NAME not in allowed_producers(event_type):
        raise EnvelopeError(
            f"{settings.SERVICE_NAME} may not emit {event_type}: its consumers would park it"
            " (producers in contracts/events.json)"
        )
    cause = current_event()
    envelope = Envelope(
        event_type=event_type,
        saga_id=str(saga_id),
        producer=settings.SERVICE_NAME,
        payload=payload,
        schema_version=latest_version(event_type),
        causation_id=cause.event_id if cause else None,
        trace=current_trace(),
    )
    # A producer never publishes what its consumers would park: check the contract here,
    # inside the transaction, so a violation fails (and is retried/parked) where it was made.
    validate_envelope(envelope)
    defer(_write, (envelope, envelope.to_json()))
    return envelope


def _write(rows: list[tuple[Envelope, str]]) -> None:
    """The outbox rows of a transaction (one event, or a group-commit batch's), one INSERT.

    Publishing on commit, the rows go to this process's pusher once the transaction
    commits (common/messaging/direct.py). Otherwise a NOTIFY, delivered on commit, wakes the
    relay. Either way the row is what guarantees the event (the relay's sweep).
    """
    on_commit = settings.SAGA_PUBLISH_ON_COMMIT
    columns = [
        [envelope.event_id for envelope, _ in rows],
        [envelope.event_type for envelope, _ in rows],
        [envelope.routing_key for envelope, _ in rows],
        [envelope.saga_id for envelope, _ in rows],
        [body for _, body in rows],
        [envelope.occurred_at for envelope, _ in rows],
    ]
    with statement_cursor() as cursor:
        if on_commit:
            _INSERT.execute(cursor, columns)
            ids = {uuid.UUID(str(event_id)): row_id for event_id, row_id in cursor.fetchall()}
        else:
            _INSERT_AND_NOTIFY.execute(cursor, [*columns, notify_channel(settings.SERVICE_NAME)])
    if on_commit:
        publish_after_commit([(ids[uuid.UUID(envelope.event_id)], envelope, body) for envelope, body in rows])


_INSERT_SQL = (
    f"INSERT INTO {OutboxMessage._meta.db_table}"
    " (event_id, event_type, routing_key, saga_id, body, created_at, publish_attempts, last_error)"
    " SELECT *, 0, '' FROM unnest(%s, %s, %s, %s, %s, %s) RETURNING event_id, id"
)
_TYPES = ("uuid[]", "text[]", "text[]", "uuid[]", "text[]", "timestamptz[]")
_INSERT = Statement("outbox_insert", _INSERT_SQL, _TYPES)
_INSERT_AND_NOTIFY = Statement(
    "outbox_insert_notify",
    f"WITH written AS ({_INSERT_SQL}) SELECT pg_notify(%s, '') FROM written LIMIT 1",
    (*_TYPES, "text"),
)


@dataclass(frozen=True)
class Backlog:
    unpublished: int
    oldest_seconds: float | None  # age of the oldest unpublished row; None when all are out


def outbox_backlog() -> Backlog:
    """What the relay has still to publish (two reads of the partial index on unpublished
    rows): for the relay's gauges, the outbox admin's title and the saga map."""
    pending = OutboxMessage.objects.filter(published_at__isnull=True).order_by("id")
    oldest = pending.values_list("created_at", flat=True).first()
    age = (timezone.now() - oldest).total_seconds() if oldest else None
    return Backlog(pending.count() if oldest else 0, age)
