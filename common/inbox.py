"""The idempotent consumer: one inbox row per handled event, in the handler's transaction."""

from __future__ import annotations

from django.db import connection
from django.utils import timezone

from common.envelope import Envelope
from common.sagas import saga_lock_key


def inbox_claim(envelope: Envelope) -> bool:
    """Take the saga's lock, then record ``envelope`` as handled; False if it already was.

    Must run in the same transaction as the handler's effect. The lock (see
    :func:`common.sagas.saga_lock_key`) serialises this service's handlers of one saga;
    it and the inbox row cost one round trip. A concurrent duplicate blocks on the
    primary key until the first commits, then sees the conflict: exactly one of them
    applies the effect.
    """
    lock = f"SELECT pg_advisory_xact_lock({saga_lock_key(envelope.saga_id)}); "
    with connection.cursor() as cursor:
        cursor.execute(
            lock + "INSERT INTO messaging_inbox (event_id, event_type, saga_id, producer, received_at)"
            " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (event_id) DO NOTHING",
            [
                envelope.event_id,
                envelope.event_type,
                envelope.saga_id,
                envelope.producer,
                timezone.now(),
            ],
        )
        return cursor.rowcount == 1
