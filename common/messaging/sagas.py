"""Saga-level facts every service needs: the step's transaction, per-saga serialisation,
cancellation tombstones, and the notices that put retries and parked messages on the
saga's timeline."""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from django.conf import settings
from django.db import transaction

from common.messaging.models import CancelledSaga
from common.messaging.outbox import emit
from common.messaging.registry import NOTICE_EVENTS
from common.messaging.statements import Statement, statement_cursor
from common.observability.context import current_event

P = ParamSpec("P")
R = TypeVar("R")


def saga_step(step: Callable[P, R]) -> Callable[P, R]:
    """A service function that changes a saga's state runs in one transaction: every write
    and every event it emits commit together or not at all (docs/architecture.md, "Who
    opens the transaction").

    Called by a handler, it joins the consumer's transaction (one delivery, or a group-commit
    batch, whose inbox claim and saga lock came first); called from the shell, a view or a
    test, it is its own transaction. ``savepoint=False``: no round trip when it joins.
    Retries inside a step (inventory's version checks) are savepoints within it.
    """

    @functools.wraps(step)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        with transaction.atomic(savepoint=False):
            return step(*args, **kwargs)

    return run


def saga_lock_key(saga_id: str) -> int:
    """The advisory lock key of a saga: 63 bits of its UUID (an int, safe to inline in SQL).

    ``pg_advisory_xact_lock`` on it serialises this service's handlers of one saga
    (taken by :func:`common.messaging.inbox.inbox_claim` first in every handler transaction, and
    the only advisory lock a transaction takes, so it cannot take part in a deadlock;
    ``lock_timeout`` bounds the wait).
    """
    return uuid.UUID(str(saga_id)).int & 0x7FFF_FFFF_FFFF_FFFF


_MARK_CANCELLED = Statement(
    "saga_mark_cancelled",
    f"INSERT INTO {CancelledSaga._meta.db_table} (saga_id, reason, cancelled_at)"
    " VALUES (%s, %s, now()) ON CONFLICT (saga_id) DO NOTHING",
    ("uuid", "text"),
)


def saga_mark_cancelled(*, saga_id: str, reason: str) -> bool:
    """Record the cancellation; False if it was already recorded.

    One ``INSERT … ON CONFLICT DO NOTHING`` (every service runs it for every cancelled
    saga): the ORM's ``get_or_create`` took a SELECT, a savepoint and an INSERT.
    """
    with statement_cursor() as cursor:
        _MARK_CANCELLED.execute(cursor, [saga_id, reason])
        return cursor.rowcount == 1


# "Was this saga cancelled?" as an SQL expression (one parameter: the saga id), for a
# handler to ask it together with its own questions in one round trip (see ``saga_facts``).
CANCELLED_SQL = f"EXISTS (SELECT 1 FROM {CancelledSaga._meta.db_table} WHERE saga_id = %s)"


def saga_facts(statement: Statement, params: list[Any]) -> tuple[Any, ...]:
    """Ask several questions about a saga in one round trip: ``statement`` is ``SELECT a, b, …``.

    Handlers run for every event; asking "already done? cancelled? …" in one statement
    instead of one ORM query each is most of the difference in their CPU cost.
    """
    with statement_cursor() as cursor:
        statement.execute(cursor, params)
        return cursor.fetchone()


def note_retried(*, event_type: str, event_id: str, attempts: int, last_error: str) -> None:
    """Inside the handler's transaction: this event was handled after ``attempts`` retries."""
    cause = current_event()
    if cause is None or event_type in NOTICE_EVENTS:
        return
    emit(
        event_type="MessageRetried",
        saga_id=cause.saga_id,
        payload={
            "service": settings.SERVICE_NAME,
            "event_type": event_type,
            "event_id": event_id,
            "attempts": attempts,
            "last_error": last_error[:2000],
        },
    )
