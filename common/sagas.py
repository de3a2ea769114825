"""Saga-level facts every service needs: per-saga serialisation and cancellation tombstones."""

from __future__ import annotations

import uuid

from django.db import connection

from common.messaging.models import CancelledSaga


def saga_lock(saga_id: str) -> None:
    """Serialise this service's handlers of one saga (a transaction-scoped advisory lock).

    Taken first in every handler transaction, and the only advisory lock a transaction
    takes, so it cannot take part in a deadlock; ``lock_timeout`` bounds the wait.
    """
    key = uuid.UUID(str(saga_id)).int & 0x7FFF_FFFF_FFFF_FFFF
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [key])


def saga_mark_cancelled(*, saga_id: str, reason: str) -> bool:
    """Record the cancellation; False if it was already recorded."""
    _, created = CancelledSaga.objects.get_or_create(saga_id=saga_id, defaults={"reason": reason})
    return created


def saga_is_cancelled(saga_id: str) -> bool:
    return CancelledSaga.objects.filter(saga_id=saga_id).exists()
