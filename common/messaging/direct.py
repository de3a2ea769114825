"""Publishing events right after their transaction commits (``SAGA_PUBLISH_ON_COMMIT``, on by default).

An accelerator, not the guarantee: the outbox row was written in the transaction, and
the relay publishes whatever this did not (the broker was away, the process died
between commit and publish, or between publish and marking the row) once the row is
``SAGA_RELAY_GRACE_SECONDS`` old. A copy published twice is absorbed by every
consumer's inbox.

At commit the event is only handed to this process's **pusher**, a thread that
publishes what it was given in batches (one broker round trip and fsync per batch,
confirms awaited together), and marks the rows published, at most every
``MARK_EVERY_SECONDS``, in one statement.
The thread that committed — a worker between two deliveries, a web request — never
waits for the broker: a slow or cut broker connection holds up the pusher only, and
the relay covers for it after the grace period. What this saves against the relay
alone: the NOTIFY, the relay's wake-up, its claiming transaction, and a hop of latency.
"""

from __future__ import annotations

import atexit
import collections
import logging
import os
import threading
import time
from dataclasses import dataclass

from django.conf import settings
from django.db import connection, transaction

from common.messaging import faults
from common.messaging.broker import BatchPublisher, outgoing
from common.messaging.envelope import Envelope
from common.messaging.models import OutboxMessage
from common.messaging.statements import Statement, statement_cursor
from common.observability import metrics
from common.observability.tracing import publishing_each

log = logging.getLogger("saga.outbox")

BACKOFF_SECONDS = 5.0  # after a failed publish, leave new events to the relay this long
MAX_PENDING = 10_000  # beyond this many unpublished hand-overs, new ones are left to the relay
BATCH = 200
IDLE_CLOSE_SECONDS = 10.0  # the pusher's database connection is closed after this long unused
# Marking rows published is deferred and batched: one UPDATE per this interval, not one per
# event (each is a commit). Far below the relay's grace period, so the relay never races it.
MARK_EVERY_SECONDS = 0.2


_MARK = Statement(
    "outbox_mark",
    f"UPDATE {OutboxMessage._meta.db_table} SET published_at = now()"
    " WHERE id = ANY(%s) AND published_at IS NULL",
    ("bigint[]",),
)


@dataclass(frozen=True)
class _Item:
    row_id: int
    envelope: Envelope
    body: str


class Pusher:
    """One per process: a daemon thread publishing the events handed over at commit."""

    def __init__(self) -> None:
        self._pending: collections.deque[_Item] = collections.deque()
        self._wake = threading.Condition()
        self._busy = 0  # items taken off the deque and not yet published (or being marked)
        self._unmarked: list[int] = []  # outbox ids published (confirmed), not yet marked
        self._marked_at = 0.0
        self._hurry = False  # flush(): mark now rather than at the next MARK_EVERY_SECONDS
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        self._stopping = False
        self._down_until = 0.0
        self._publisher: BatchPublisher | None = None
        self.publisher_factory = BatchPublisher  # tests swap in an unreachable or slow broker

    def submit(self, items: list[_Item]) -> bool:
        """Queue ``items`` for publishing; False if they are left to the relay instead."""
        if time.monotonic() < self._down_until or self._stopping:
            return False  # the broker failed us a moment ago: the relay has these
        with self._wake:
            if len(self._pending) + len(items) > MAX_PENDING:
                return False
            self._pending.extend(items)
            self._ensure_thread()
            self._wake.notify()
        return True

    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive() or self._pid != os.getpid():
            self._pid = os.getpid()  # forked: the parent's thread does not exist here
            self._publisher = None
            self._thread = threading.Thread(target=self._run, name="saga-pusher", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        last_used = time.monotonic()
        while True:
            with self._wake:
                idle = False
                while not self._pending and not self._stopping and not self._hurry:
                    if self._unmarked:
                        left = self._marked_at + MARK_EVERY_SECONDS - time.monotonic()
                        if left <= 0:
                            break
                        self._wake.wait(left)
                    elif not self._wake.wait(IDLE_CLOSE_SECONDS):
                        idle = True
                        break
                batch = [self._pending.popleft() for _ in range(min(BATCH, len(self._pending)))]
                self._busy = len(batch)
                last = self._stopping and not self._pending
            if idle and not batch and not last:
                self._upkeep(idle_for=time.monotonic() - last_used)
                continue
            try:
                if batch:
                    confirmed = self._push(batch)
                    with self._wake:
                        self._unmarked.extend(confirmed)
                due = time.monotonic() - self._marked_at >= MARK_EVERY_SECONDS
                if self._unmarked and (due or last or self._hurry):
                    self._mark()
            except Exception:  # noqa: BLE001 - the relay publishes whatever this missed
                log.exception("the pusher failed; the relay will publish what it had")
            finally:
                last_used = time.monotonic()
                with self._wake:
                    self._busy = 0
                    if not self._unmarked:
                        self._hurry = False
                    self._wake.notify_all()
            if last:
                connection.close()
                return

    def _upkeep(self, *, idle_for: float) -> None:
        """While idle, and outside the lock: a committing thread never waits for this I/O."""
        if idle_for > IDLE_CLOSE_SECONDS:
            connection.close()  # give the database its connection back
        if self._publisher is not None:
            self._publisher.keep_alive()  # heartbeats, or the broker drops the connection

    def _mark(self) -> None:
        """Mark what was confirmed since the last time published, in one statement."""
        with self._wake:
            ids, self._unmarked = self._unmarked, []
            self._busy += len(ids)  # flush() waits for this UPDATE too (reset after it, in _run)
        self._marked_at = time.monotonic()
        try:
            with statement_cursor() as cursor:  # autocommit: one statement, no transaction to pay for
                _MARK.execute(cursor, [ids])
        except Exception:  # noqa: BLE001 - the relay will publish a copy: harmless
            log.warning("published %d events but could not mark them", len(ids), exc_info=True)
            connection.close()  # a broken connection is reopened next time

    def _push(self, batch: list[_Item]) -> list[int]:
        """Publish ``batch``, wait for its confirms; the outbox ids of the confirmed ones."""
        if self._publisher is None:
            self._publisher = self.publisher_factory()
        messages = [
            outgoing(
                body=item.body,
                event_id=item.envelope.event_id,
                event_type=item.envelope.event_type,
                routing_key=item.envelope.routing_key,
            )
            for item in batch
        ]
        try:
            spans = [(i.envelope.event_type, i.envelope.saga_id, i.envelope.trace) for i in batch]
            with publishing_each(settings.SERVICE_NAME, spans):
                confirmed = self._publisher.publish_batch(messages)
        except Exception:  # noqa: BLE001 - the relay publishes them after the grace period
            log.warning("could not publish %d events on commit; the relay will", len(batch), exc_info=True)
            self._down_until = time.monotonic() + BACKOFF_SECONDS
            return []
        ids = []
        for item, ok in zip(batch, confirmed, strict=True):
            if ok:
                ids.append(item.row_id)
                metrics.OUTBOX_PUBLISHED.labels(settings.SERVICE_NAME, item.envelope.event_type).inc()
        return ids

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until everything handed over so far was published (or given up); True if so."""
        deadline = time.monotonic() + timeout
        with self._wake:
            self._hurry = True
            self._wake.notify_all()
            while self._pending or self._busy or self._unmarked:
                left = deadline - time.monotonic()
                if left <= 0 or self._thread is None or not self._thread.is_alive():
                    return False
                self._wake.wait(left)
        return True

    def stop(self, timeout: float = 2.0) -> None:
        """Publish what is queued (for at most ``timeout``), then end the thread."""
        with self._wake:
            self._stopping = True
            self._wake.notify_all()
        thread = self._thread
        if thread is not None and thread.is_alive() and thread is not threading.current_thread():
            thread.join(timeout)
        if self._publisher is not None:
            self._publisher.close()
            self._publisher = None
        self._thread = None
        self._stopping = False


_pusher = Pusher()
atexit.register(_pusher.stop)  # a short-lived process (a management command) publishes before it exits


def pusher() -> Pusher:
    return _pusher


def publish_after_commit(rows: list[tuple[int, Envelope, str]]) -> None:
    """Once the current transaction commits, hand its events (outbox id, envelope, body) to
    this process's pusher."""
    items = [_Item(row_id, envelope, body) for row_id, envelope, body in rows]
    transaction.on_commit(lambda: _hand_over(items))


def _hand_over(items: list[_Item]) -> None:
    handed = []
    for item in items:
        try:
            # A process that dies here (or is told to act as if it had) leaves the row to the relay.
            faults.point(
                "outbox.after_commit", service=settings.SERVICE_NAME, event_type=item.envelope.event_type
            )
        except faults.InjectedFault:
            log.warning("fault injection: %s left to the relay", item.envelope.event_type)
            continue
        handed.append(item)
    if handed:
        _pusher.submit(handed)
