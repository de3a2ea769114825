"""The idempotent consumer: one inbox row per handled event, in the handler's transaction."""

from __future__ import annotations

from collections.abc import Sequence

from common.messaging.envelope import Envelope
from common.messaging.models import InboxMessage
from common.messaging.sagas import saga_lock_key
from common.messaging.statements import Statement, statement_cursor

# One statement: the sagas' advisory locks, taken in key order (the aggregate consumes the
# sorted keys before the first row is inserted), then every inbox row. (One statement, not
# "SELECT lock; INSERT": a driver may report the first statement's rowcount, as psycopg 3
# does, and take a duplicate for a first delivery.)
_CLAIM = Statement(
    "inbox_claim",
    f"INSERT INTO {InboxMessage._meta.db_table}"
    " (event_id, event_type, saga_id, producer, received_at, occurred_at, attempts)"
    " SELECT e.event_id, e.event_type, e.saga_id, e.producer, now(), e.occurred_at, %s"
    " FROM (SELECT count(pg_advisory_xact_lock(k)) FROM"
    " (SELECT DISTINCT unnest(%s) AS k ORDER BY 1) AS keys) AS locked,"
    " unnest(%s, %s, %s, %s, %s) AS e(event_id, event_type, saga_id, producer, occurred_at)"
    " ON CONFLICT (event_id) DO NOTHING RETURNING event_id",
    ("smallint", "bigint[]", "uuid[]", "text[]", "uuid[]", "text[]", "timestamptz[]"),
)


def inbox_claim_many(envelopes: Sequence[Envelope], *, attempts: int = 0) -> set[str]:
    """Take the sagas' locks, then record every envelope as handled; the event ids recorded now.

    Must run in the same transaction as the handlers' effects. The locks (see
    :func:`common.messaging.sagas.saga_lock_key`) serialise this service's handlers of one saga; a
    transaction that holds several takes them in one global order (ascending key), so two
    batches never wait on each other in a cycle. An event id missing from the result was
    handled before (or appears twice in ``envelopes``: only its first copy is recorded). A
    concurrent duplicate waits on its saga's lock until the first commits, then sees the
    conflict: exactly one of them applies the effect. ``attempts``: the retry tiers the
    deliveries went through (a batch holds first deliveries only: 0).
    """
    if not envelopes:
        return set()
    with statement_cursor() as cursor:
        _CLAIM.execute(
            cursor,
            [
                attempts,
                [saga_lock_key(e.saga_id) for e in envelopes],
                [e.event_id for e in envelopes],
                [e.event_type for e in envelopes],
                [e.saga_id for e in envelopes],
                [e.producer for e in envelopes],
                [e.occurred_at for e in envelopes],
            ],
        )
        return {str(row[0]) for row in cursor.fetchall()}


def inbox_claim(envelope: Envelope, *, attempts: int = 0) -> bool:
    """Take the saga's lock, then record ``envelope`` as handled; False if it already was."""
    return bool(inbox_claim_many([envelope], attempts=attempts))
