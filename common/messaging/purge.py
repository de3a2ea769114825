"""Housekeeping: delete inbox and outbox rows once nothing can still need them.

**Inbox.** A row is what makes a redelivered copy of an event harmless: deleting it while
a copy can still arrive would apply that event twice. A copy can come back

- through this service's retry tiers: a message goes through each tier once, so at most
  the *sum* of ``SAGA_RETRY_DELAYS_MS`` after the handled copy;
- from a relay that published a row but died before marking it: it republishes within
  seconds (a sweep), behind whatever backlog the queue has;
- from the parking lot when an operator replays a copy that was parked (say the handled
  copy was a republished one): parked messages can sit for days;
- from a queue that waited for a crashed worker (unacknowledged after commit).

Hence the rule::

    inbox window = sum(SAGA_RETRY_DELAYS_MS) + SAGA_INBOX_REPLAY_MARGIN_SECONDS (default 7 days)

A row older than the window is deleted, **except** while this service still holds a copy
of its event in the parking lot (``PARKED``), or replayed one within the window: those
copies are known to be able to come back, however old, so the margin only has to cover
what the database cannot see (a queue backlog, a parked message not yet ingested).

**Outbox.** A published row (``published_at`` set) is never read again by the relay; it
is kept ``SAGA_OUTBOX_RETENTION_SECONDS`` (default 1 day) after its publication for
operators (admin, tracing a saga), then deleted. An unpublished row is never deleted:
it is an event still owed to the other services (the audit reports it when it is old).

**How.** Batches of ``SAGA_PURGE_BATCH`` rows (default 5000), one short transaction per
``DELETE ... WHERE ctid = ANY(ARRAY(SELECT ctid ... LIMIT n))`` statement, so the tables
are never locked beyond row locks on rows nobody uses any more (inserts, claims and
publishes go on meanwhile), and a run stops when a batch deletes fewer than ``n`` rows or
when its time budget (``SAGA_PURGE_TIME_BUDGET_SECONDS``) is spent. Old rows are found
through indexes on ``received_at`` and ``published_at`` (migration 0003), not by
scanning the tables. Each service's relay runs it every ``SAGA_PURGE_INTERVAL_SECONDS``
(:class:`PeriodicPurge`); ``./manage.py <service> purge [--dry-run]`` runs it by hand.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, transaction

log = logging.getLogger("saga.purge")

INBOX = "messaging_inbox"
OUTBOX = "messaging_outbox"

DEFAULT_RETRY_DELAYS_MS = (1000, 5000, 30000)  # common/settings.py's default tiers
DEFAULT_REPLAY_MARGIN_SECONDS = 7 * 24 * 3600.0
DEFAULT_OUTBOX_RETENTION_SECONDS = 24 * 3600.0
DEFAULT_INTERVAL_SECONDS = 600.0
DEFAULT_BATCH = 5000
DEFAULT_TIME_BUDGET_SECONDS = 2.0
# A run cut short by its time budget continues after this pause rather than a whole
# interval later, so a large backlog (the first purge of a busy service) drains in
# bounded slices between the relay's publishes.
BACKLOG_PAUSE_SECONDS = 10.0
# The relay's first purge comes at a random moment within this after it starts, so that
# the four services (one PostgreSQL server) do not all purge at the same second.
FIRST_RUN_SPREAD_SECONDS = 60.0

# Inbox rows older than the cutoff, unless a copy of their event is parked in this
# service or was replayed since the cutoff (it can come back whatever its age).
_INBOX_PURGEABLE = """
    i.received_at < %(cutoff)s
    AND NOT EXISTS (
        SELECT 1 FROM messaging_parked p
        WHERE p.event_id = i.event_id
          AND (p.status = 'PARKED' OR EXISTS (
                SELECT 1 FROM messaging_parked_action a
                WHERE a.message_id = p.id AND a.action = 'replay' AND a.at >= %(cutoff)s))
    )
"""
_OUTBOX_PURGEABLE = "o.published_at IS NOT NULL AND o.published_at < %(cutoff)s"

# ctid: the row's physical address, so each batch deletes exactly the rows its subquery
# found (through the index) without a second lookup by key. No "id > last seen" cursor:
# ids commit out of order, and every batch simply takes any N rows still purgeable.
_DELETE = {
    INBOX: f"DELETE FROM {INBOX} WHERE ctid = ANY(ARRAY("
    f"SELECT i.ctid FROM {INBOX} i WHERE {_INBOX_PURGEABLE} LIMIT %(batch)s))",
    OUTBOX: f"DELETE FROM {OUTBOX} WHERE ctid = ANY(ARRAY("
    f"SELECT o.ctid FROM {OUTBOX} o WHERE {_OUTBOX_PURGEABLE} LIMIT %(batch)s))",
}
_COUNT = {
    INBOX: f"SELECT count(*) FROM {INBOX} i WHERE {_INBOX_PURGEABLE}",
    OUTBOX: f"SELECT count(*) FROM {OUTBOX} o WHERE {_OUTBOX_PURGEABLE}",
}


def inbox_window_seconds(retry_delays_ms: Sequence[int], replay_margin_seconds: float) -> float:
    """How long an inbox row must outlive its event's handling: sum of the tiers + margin.

    The sum, not the longest tier: a message goes through every tier in turn before it is
    parked, so the last copy can arrive that long after the first.
    """
    if replay_margin_seconds < 0 or any(delay < 0 for delay in retry_delays_ms):
        raise ValueError("retry delays and the replay margin must not be negative")
    return sum(retry_delays_ms) / 1000 + replay_margin_seconds


@dataclass(frozen=True)
class Retention:
    """How long each table keeps its rows, in seconds (see the module docstring)."""

    inbox_seconds: float
    outbox_seconds: float
    retry_seconds: float = 0.0  # the retry tiers' part of inbox_seconds, for reports
    replay_margin_seconds: float = 0.0  # and the margin's

    @classmethod
    def from_settings(cls) -> Retention:
        delays = getattr(settings, "SAGA_RETRY_DELAYS_MS", DEFAULT_RETRY_DELAYS_MS)
        margin = float(getattr(settings, "SAGA_INBOX_REPLAY_MARGIN_SECONDS", DEFAULT_REPLAY_MARGIN_SECONDS))
        outbox = float(getattr(settings, "SAGA_OUTBOX_RETENTION_SECONDS", DEFAULT_OUTBOX_RETENTION_SECONDS))
        if outbox < 0:
            raise ValueError("SAGA_OUTBOX_RETENTION_SECONDS must not be negative")
        return cls(
            inbox_seconds=inbox_window_seconds(delays, margin),
            outbox_seconds=outbox,
            retry_seconds=sum(delays) / 1000,
            replay_margin_seconds=margin,
        )


@dataclass(frozen=True)
class TablePurge:
    """What one run did to one table."""

    table: str
    cutoff: datetime  # rows older than this (received / published) were purgeable
    deleted: int
    statements: int
    finished: bool  # False: the time budget ran out with purgeable rows possibly left


@dataclass(frozen=True)
class PurgeResult:
    inbox: TablePurge
    outbox: TablePurge
    seconds: float

    @property
    def finished(self) -> bool:
        return self.inbox.finished and self.outbox.finished

    @property
    def deleted(self) -> int:
        return self.inbox.deleted + self.outbox.deleted


def cutoffs(retention: Retention) -> dict[str, datetime]:
    """Each table's cutoff, from the database's clock (it stamps published_at itself)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT now()")
        (now,) = cursor.fetchone()
    return {
        INBOX: now - timedelta(seconds=retention.inbox_seconds),
        OUTBOX: now - timedelta(seconds=retention.outbox_seconds),
    }


def _purge_table(
    table: str, *, cutoff: datetime, batch: int, deadline: float | None, clock: Callable[[], float]
) -> TablePurge:
    """Delete ``table``'s purgeable rows, ``batch`` per transaction, until done or the deadline.

    At least one batch runs even past the deadline, so that each table makes progress in
    every run whatever the other one cost.
    """
    deleted = statements = 0
    while True:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(_DELETE[table], {"cutoff": cutoff, "batch": batch})
            count = cursor.rowcount
        deleted += count
        statements += 1
        if count < batch:
            return TablePurge(table, cutoff, deleted, statements, finished=True)
        if deadline is not None and clock() >= deadline:
            return TablePurge(table, cutoff, deleted, statements, finished=False)


def purge(
    *,
    retention: Retention | None = None,
    batch: int | None = None,
    time_budget: float | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> PurgeResult:
    """Delete what the retention rule allows from this service's inbox and outbox.

    ``time_budget``: seconds this run may take (checked between batches; ``math.inf``: no
    limit); by default ``SAGA_PURGE_TIME_BUDGET_SECONDS``, small because the relay does not
    publish while it purges. Call it outside any transaction: each batch is meant to
    commit on its own (inside one, they would all hold their row locks until the end).
    """
    retention = retention or Retention.from_settings()
    if batch is None:
        batch = int(getattr(settings, "SAGA_PURGE_BATCH", DEFAULT_BATCH))
    if batch < 1:
        raise ValueError("SAGA_PURGE_BATCH must be at least 1")
    if time_budget is None:
        time_budget = float(getattr(settings, "SAGA_PURGE_TIME_BUDGET_SECONDS", DEFAULT_TIME_BUDGET_SECONDS))
    started = clock()
    deadline = None if math.isinf(time_budget) else started + time_budget
    limits = cutoffs(retention)
    inbox = _purge_table(INBOX, cutoff=limits[INBOX], batch=batch, deadline=deadline, clock=clock)
    outbox = _purge_table(OUTBOX, cutoff=limits[OUTBOX], batch=batch, deadline=deadline, clock=clock)
    result = PurgeResult(inbox, outbox, seconds=clock() - started)
    (log.info if result.deleted else log.debug)(
        "purged %d inbox row(s) received before %s and %d outbox row(s) published before %s in %.2fs%s",
        inbox.deleted,
        inbox.cutoff.isoformat(),
        outbox.deleted,
        outbox.cutoff.isoformat(),
        result.seconds,
        "" if result.finished else " (time budget spent: more next run)",
    )
    return result


def purgeable_counts(retention: Retention | None = None) -> dict[str, tuple[datetime, int]]:
    """What a purge would delete now, per table: (cutoff, rows). Reads only (``--dry-run``)."""
    limits = cutoffs(retention or Retention.from_settings())
    counts = {}
    with connection.cursor() as cursor:
        for table in (INBOX, OUTBOX):
            cursor.execute(_COUNT[table], {"cutoff": limits[table]})
            counts[table] = (limits[table], cursor.fetchone()[0])
    return counts


@dataclass(frozen=True)
class Kept:
    """The oldest rows a purge with these cutoffs keeps (None: no such row)."""

    inbox_received_at: datetime | None
    outbox_published_at: datetime | None
    outbox_unpublished: int
    outbox_oldest_unpublished_at: datetime | None


def oldest_kept(limits: dict[str, datetime]) -> Kept:
    """The oldest rows that survive ``limits`` (exact after a finished purge, or for a dry run)."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT least((SELECT min(received_at) FROM {INBOX} WHERE received_at >= %(cutoff)s),"
            f" (SELECT min(i.received_at) FROM {INBOX} i WHERE i.received_at < %(cutoff)s"
            f"  AND NOT ({_INBOX_PURGEABLE})))",
            {"cutoff": limits[INBOX]},
        )
        (inbox,) = cursor.fetchone()
        cursor.execute(
            f"SELECT min(published_at) FROM {OUTBOX} WHERE published_at >= %(cutoff)s",
            {"cutoff": limits[OUTBOX]},
        )
        (published,) = cursor.fetchone()
        cursor.execute(f"SELECT count(*), min(created_at) FROM {OUTBOX} WHERE published_at IS NULL")
        unpublished, oldest_unpublished = cursor.fetchone()
    return Kept(inbox, published, unpublished, oldest_unpublished)


class PeriodicPurge:
    """Runs :func:`purge` from a long-running loop (the relay) at most once per interval.

    The relay is the natural host: one per service, already a loop with database access,
    and it calls this only when idle (no publishing backlog). A failing purge is logged
    and retried an interval later; it never propagates, because the relay's job is
    publishing and housekeeping must not stop it.
    """

    def __init__(
        self,
        *,
        interval: float,
        run: Callable[[], PurgeResult] = purge,
        clock: Callable[[], float] = time.monotonic,
        first_delay: float = 0.0,
        backlog_pause: float = BACKLOG_PAUSE_SECONDS,
    ) -> None:
        self.interval = interval
        self._run = run
        self._clock = clock
        self._backlog_pause = backlog_pause
        self._due = clock() + first_delay

    @classmethod
    def from_settings(cls) -> PeriodicPurge:
        interval = float(getattr(settings, "SAGA_PURGE_INTERVAL_SECONDS", DEFAULT_INTERVAL_SECONDS))
        spread = min(max(interval, 0.0), FIRST_RUN_SPREAD_SECONDS)
        return cls(interval=interval, first_delay=random.uniform(0, spread))

    @property
    def enabled(self) -> bool:
        """``SAGA_PURGE_INTERVAL_SECONDS`` <= 0 turns the periodic purge off (the command still works)."""
        return self.interval > 0

    def purge_if_due(self) -> PurgeResult | None:
        """Purge if the interval since the last run has passed; the result, or None if not run."""
        if not self.enabled or self._clock() < self._due:
            return None
        self._due = self._clock() + self.interval
        try:
            result = self._run()
            if not result.finished:
                self._due = self._clock() + min(self._backlog_pause, self.interval)
        except Exception:  # noqa: BLE001 - housekeeping must never stop the relay
            log.warning("purge failed; next attempt in %.0fs", self.interval, exc_info=True)
            return None
        return result
