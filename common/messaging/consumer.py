"""Consuming events: decode, validate, dedup, handle, and decide ack / retry / park.

``process_delivery`` is the whole decision for one delivery and ``process_batch``
for several sharing one transaction (group commit), both independent of the broker
so they can be tested without it; ``EventConsumer`` wires them to kombu messages: it
acks only after the handlers' transaction committed, and moves failures to this
service's retry tiers or parking lot (publish with confirm first, then ack, so a
crash in between can only duplicate, which the inbox absorbs).

Group commit: the consumer collects what the prefetch has already delivered — up to
``SAGA_BATCH_MAX``, never waiting for more: a batch ends when the connection's socket
is drained — and handles it in one transaction (the sagas' locks in key order, the
inbox rows in one statement, each handler as it would run alone, the outbox and
timeline rows in one statement each, one commit), then acks it with one
``basic.ack(multiple=True)``. If anything in the batch fails, the batch rolls back
and each delivery is handled again on its own, with today's retry tiers and parking.
``SAGA_BATCH_MAX=1`` handles every delivery on its own.
"""

from __future__ import annotations

import enum
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import close_old_connections, connection, transaction
from django.db.utils import InterfaceError, OperationalError
from kombu import Consumer
from kombu.message import Message

from common.messaging import faults
from common.messaging.broker import Publisher, registry, topology
from common.messaging.contracts import validate_envelope
from common.messaging.envelope import Envelope, EnvelopeError, utcnow
from common.messaging.groupcommit import collecting, write_collected
from common.messaging.inbox import inbox_claim, inbox_claim_many
from common.messaging.parking import (
    ATTEMPT_HEADER,
    LAST_ERROR_HEADER,
    ORIGINAL_HEADERS_HEADER,
    PARK_ID_HEADER,
    PARK_REASON_HEADER,
    PARKED_AT_HEADER,
    parked_ingest,
)
from common.messaging.registry import EventRegistry, Registration
from common.messaging.sagas import note_retried
from common.messaging.signing import SIGNATURE_HEADER, distrust
from common.observability import metrics
from common.observability.context import handling
from common.observability.tracing import consuming, trace_id_of

log = logging.getLogger("saga.consumer")

SERVICE_HEADER = "x-saga-service"
MAX_HEADER_TEXT = 2000
# A batch waits for the socket to drain at most this long (see EventConsumer._on_tick).
MAX_WAIT_SECONDS = 0.02


class Disposition(enum.Enum):
    HANDLED = "handled"
    DUPLICATE = "duplicate"
    RETRY = "retry"
    PARK = "park"


@dataclass(frozen=True)
class Outcome:
    disposition: Disposition
    reason: str = ""
    envelope: Envelope | None = None


def read_delivery(
    body: bytes, *, events: EventRegistry, service: str, signature: object = None
) -> tuple[Envelope, Registration] | Outcome:
    """Decode and check one delivery: its envelope and handler, or the outcome PARK and why.

    ``signature`` is the delivery's ``x-saga-signature`` header: an event that is not
    signed by the producer it names, or from a producer not allowed to emit its type,
    is parked with the reason and never handled (common/messaging/signing.py).
    """
    if len(body) > settings.SAGA_MAX_EVENT_BYTES:
        return Outcome(
            Disposition.PARK,
            f"malformed event: body of {len(body)} bytes (limit {settings.SAGA_MAX_EVENT_BYTES})",
        )
    try:
        envelope = Envelope.from_json(body)
        validate_envelope(envelope)
    except EnvelopeError as exc:
        return Outcome(Disposition.PARK, f"malformed event: {exc}")
    except Exception as exc:  # noqa: BLE001 - a body we cannot even read must not stop the worker
        log.exception("could not read a delivery's body; parking it")
        return Outcome(Disposition.PARK, f"malformed event: unreadable ({type(exc).__name__}: {exc})"[:2000])
    untrusted = distrust(envelope, body, signature)
    if untrusted is not None:
        return Outcome(Disposition.PARK, f"untrusted event: {untrusted}", envelope)
    registration = events.get(envelope.event_type)
    if registration is None:
        return Outcome(
            Disposition.PARK,
            f"{service} has no handler for {envelope.event_type} (stale binding or misrouted event)",
            envelope,
        )
    return envelope, registration


def process_delivery(
    body: bytes,
    *,
    events: EventRegistry,
    service: str,
    signature: object = None,
    attempt: int = 0,
    last_error: str = "",
) -> Outcome:
    """Handle one delivery's body; never raises for a bad message or a failing handler."""
    read = read_delivery(body, events=events, service=service, signature=signature)
    if isinstance(read, Outcome):
        return read
    envelope, registration = read
    for reconnected in (False, True):
        try:
            return _handle(envelope, registration, service=service, attempt=attempt, last_error=last_error)
        except (InterfaceError, OperationalError) as exc:
            if not reconnected and _connection_lost():
                # The connection died while we were idle (PostgreSQL restarted, or an admin
                # terminated it): nothing was done, so reconnect and handle it again at once.
                log.warning("database connection lost (%s); reconnecting", exc)
                continue
            return Outcome(Disposition.RETRY, f"{type(exc).__name__}: {exc}", envelope)
        except Exception as exc:  # noqa: BLE001 - every failure goes to the retry tiers
            return Outcome(Disposition.RETRY, f"{type(exc).__name__}: {exc}", envelope)
    raise AssertionError("unreachable")


def _consuming(envelope: Envelope, service: str) -> Any:
    """The consumer span of one delivery (none without an exporter)."""
    return consuming(
        service=service,
        event_type=envelope.event_type,
        saga_id=envelope.saga_id,
        event_id=envelope.event_id,
        trace_headers=envelope.trace,
    )


def _handle(envelope: Envelope, registration: Any, *, service: str, attempt: int, last_error: str) -> Outcome:
    """One transaction: the saga's lock, the inbox row, the handler's effect and its events."""
    with (
        _consuming(envelope, service) as span,
        transaction.atomic(),
    ):
        if not inbox_claim(envelope, attempts=attempt):
            span.set_attribute("saga.duplicate", True)
            return Outcome(Disposition.DUPLICATE, "already handled", envelope)
        with handling(envelope):
            registration.handler(envelope)
            if attempt:
                note_retried(
                    event_type=envelope.event_type,
                    event_id=envelope.event_id,
                    attempts=attempt,
                    last_error=last_error,
                )
        faults.point("consumer.before_commit", service=service, event_type=envelope.event_type)
    return Outcome(Disposition.HANDLED, envelope=envelope)


def process_batch(
    items: list[tuple[Envelope, Registration]], *, events: EventRegistry, service: str
) -> list[Outcome]:
    """Handle several deliveries in one transaction: HANDLED or DUPLICATE for each, in order.

    Raises whatever any part raised — a handler, a writer, a lock timeout, the commit — and
    then nothing of the batch was done: the caller handles each delivery again on its own.
    Only first deliveries belong here (a retried one carries its attempt and goes alone).
    The locks: every saga's advisory lock first, in key order (the inbox claim), then
    the service's ``batch_locks`` hook takes the rows several sagas of the batch may share
    (inventory's products, payment's accounts) in its own global order, so batches in
    several worker processes never wait on each other in a cycle.
    """
    first: dict[str, int] = {}
    for index, (envelope, _) in enumerate(items):
        first.setdefault(envelope.event_id, index)
    with collecting(), transaction.atomic():
        claimed = inbox_claim_many([items[i][0] for i in first.values()])
        handled = [i for i in first.values() if items[i][0].event_id in claimed]
        if events.batch_locks is not None and len({items[i][0].saga_id for i in handled}) > 1:
            events.batch_locks([items[i][0] for i in handled])
        for index in handled:
            envelope, registration = items[index]
            with (
                _consuming(envelope, service),
                handling(envelope),
            ):
                registration.handler(envelope)
        write_collected()
        for index in handled:
            faults.point("consumer.before_commit", service=service, event_type=items[index][0].event_type)
    done = set(handled)
    return [
        Outcome(Disposition.HANDLED, envelope=envelope)
        if index in done
        else Outcome(Disposition.DUPLICATE, "already handled", envelope)
        for index, (envelope, _) in enumerate(items)
    ]


def _connection_lost() -> bool:
    """After a database error: is our connection gone? (If so, it is closed, to reconnect.)"""
    if connection.connection is not None and connection.is_usable():
        return False
    connection.close()
    return True


def raw_body(message: Message) -> bytes:
    """The body exactly as published (py-amqp may have decoded it to str for us)."""
    body = message.body
    if isinstance(body, str):
        return body.encode((message.content_encoding or "utf-8"), errors="surrogateescape")
    return bytes(body)


def _attempt(headers: dict[str, Any]) -> int:
    try:
        return max(0, int(headers.get(ATTEMPT_HEADER, 0)))
    except (TypeError, ValueError):
        return 0


def _log_extra(outcome: Outcome, attempt: int) -> dict[str, Any]:
    envelope = outcome.envelope
    return {
        "saga_id": envelope.saga_id if envelope else None,
        "event_id": envelope.event_id if envelope else None,
        "event_type": envelope.event_type if envelope else None,
        "trace_id": (trace_id_of(envelope.trace) or None) if envelope else None,
        "attempt": attempt,
    }


class EventConsumer:
    """Consumes this service's events queue: a delivery, or a batch of deliveries, at a time."""

    def __init__(self) -> None:
        self.service: str = settings.SERVICE_NAME
        self.events = registry()
        self.topology = topology()
        self.publisher = Publisher()
        self.batch_max: int = max(1, settings.SAGA_BATCH_MAX)
        self._hub: Any = None
        self._buffer: list[Message] = []
        self._deadline: Any = None  # the hub's timer that flushes a batch no later than MAX_WAIT_SECONDS

    # -- the event loop ---------------------------------------------------------------

    def attach(self, hub: Any) -> None:
        """Collect batches in Celery's event loop ``hub`` (None: one delivery at a time).

        Called when the worker's consumer (re)starts, before it consumes: whatever the
        buffer held came on the previous connection, whose channel is gone, so the broker
        redelivers it; it is dropped here, never acked on a dead channel.
        """
        self.detach()
        self._hub = hub if self.batch_max > 1 else None
        if self._hub is not None:
            self._hub.on_tick.add(self._on_tick)

    @property
    def buffered(self) -> list[Message]:
        """The deliveries collected for the next batch."""
        return self._buffer

    def detach(self) -> None:
        if self._hub is not None:
            self._hub.on_tick.discard(self._on_tick)
        self._disarm()
        self._hub = None
        self._buffer = []

    def _on_tick(self) -> None:
        """Once per turn of the event loop: handle the batch once the socket is drained.

        kombu's reader reads one frame per turn and schedules itself again (``call_soon``)
        while the socket has more; a turn that finds nothing scheduled means it drained
        what the broker had sent, so waiting longer would only add latency. (A private
        attribute of kombu's hub, pinned in requirements.txt.) The batch's deadline timer
        (``_on_deadline``) bounds the wait, whether the loop stays busy or goes to sleep.
        """
        if self._buffer and not getattr(self._hub, "_ready", None):
            self._flush()

    def _on_deadline(self) -> None:
        """The batch's first delivery has waited ``MAX_WAIT_SECONDS``: handle the batch now.

        kombu's hub fires due timers on every turn of its loop, so this bounds the wait when
        something keeps the loop busy. And without it a batch could wait for the loop's next
        wake-up, up to a second or two: when the reader's last ``call_soon`` read the burst's
        last delivery, the tick sees it scheduled and waits, and the hub then polls the
        socket (now empty) with its timers' timeout, not zero. A pending timer bounds that poll.
        """
        self._deadline = None
        if self._buffer:
            self._flush()

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    # -- consumers ----------------------------------------------------------------------

    def parked_consumer(self, channel: Any) -> Consumer:
        return Consumer(
            channel,
            queues=[self.topology.parked_queue],
            on_message=self.on_parked,
            prefetch_count=1,
            accept=None,
        )

    def on_parked(self, message: Message) -> None:
        """Move a parked message into the database, where operators work with it."""
        close_old_connections()
        try:
            parked = parked_ingest(body=raw_body(message), headers=dict(message.headers or {}))
        except Exception:
            log.exception("could not record a parked message; leaving it in the queue")
            close_old_connections()
            time.sleep(1.0)
            message.requeue()
            return
        message.ack()
        log.warning(
            "parked message #%s recorded: %s",
            parked.id,
            parked.reason,
            extra={
                "saga_id": str(parked.saga_id) if parked.saga_id else None,
                "event_id": str(parked.event_id) if parked.event_id else None,
            },
        )

    def consumer(self, channel: Any) -> Consumer:
        # Prefetch: enough to hide the broker round trip while one message (or a batch) is
        # handled, small enough that a crashed worker strands little and that several
        # worker processes share a burst fairly.
        return Consumer(
            channel,
            queues=[self.topology.events_queue],
            on_message=self.on_message,
            prefetch_count=settings.SAGA_PREFETCH,
            accept=None,
        )

    def on_message(self, message: Message) -> None:
        if self._hub is None:
            self._settling(message, self._on_message, message)
            return
        if not self._buffer:
            self._deadline = self._hub.call_later(MAX_WAIT_SECONDS, self._on_deadline)
        self._buffer.append(message)
        if len(self._buffer) >= self.batch_max:
            self._flush()

    def _settling(self, message: Message, action: Any, *args: Any, **kwargs: Any) -> None:
        """Run ``action``; if a delivery could not be settled, leave it to the broker."""
        try:
            action(*args, **kwargs)
        except Exception:
            # Could not ack/forward (the broker or our publisher connection is
            # down). Leave the message to the broker: requeue it if the channel
            # still works, else it is redelivered when the connection drops.
            log.exception("could not settle a delivery; requeueing it")
            time.sleep(1.0)
            try:
                message.requeue()
            except Exception:  # noqa: BLE001 - redelivered on reconnect anyway
                log.warning("requeue failed; the broker will redeliver on reconnect")
                raise

    # -- one delivery -------------------------------------------------------------------

    def _on_message(self, message: Message) -> None:
        # No close_old_connections() here: with persistent connections it would only add a
        # health-check round trip per delivery; a lost connection is detected and replaced
        # by process_delivery, and closed after any failure below.
        started = time.perf_counter()
        headers = dict(message.headers or {})
        if self._received(message, headers):
            self._handle_one(message, headers, started)

    def _received(self, message: Message, headers: dict[str, Any]) -> bool:
        """The ``consumer.receive`` fault point; False if the delivery was settled there."""
        injected = faults.point(
            "consumer.receive", service=self.service, event_type=(message.properties or {}).get("type")
        )
        if injected == "duplicate":
            self.publisher.publish(
                raw_body(message),
                exchange="",
                routing_key=self.topology.events_queue.name,
                headers=headers,
                message_id=(message.properties or {}).get("message_id"),
                message_type=(message.properties or {}).get("type"),
            )
        elif injected == "delay":
            # Arrive late (and out of order) without blocking this worker: park the delivery
            # in the first retry tier, attempt count unchanged.
            self._forward(
                message,
                headers,
                exchange=self.topology.retry_exchange,
                routing_key=self.topology.tiers[0],
                extra_headers={},
            )
            return False
        return True

    def _handle_one(self, message: Message, headers: dict[str, Any], started: float) -> None:
        attempt = _attempt(headers)
        outcome = process_delivery(
            raw_body(message),
            events=self.events,
            service=self.service,
            signature=headers.get(SIGNATURE_HEADER),
            attempt=attempt,
            last_error=str(headers.get(LAST_ERROR_HEADER) or ""),
        )
        self._settle(message, headers, attempt, outcome, time.perf_counter() - started)

    def _settle(
        self, message: Message, headers: dict[str, Any], attempt: int, outcome: Outcome, seconds: float
    ) -> None:
        extra = _log_extra(outcome, attempt)
        event_type = extra["event_type"] or "unknown"
        if outcome.disposition is Disposition.HANDLED:
            faults.point("consumer.after_commit", service=self.service, event_type=event_type)
            self._ack(message)
            log.info("handled %s", event_type, extra=extra)
        elif outcome.disposition is Disposition.DUPLICATE:
            self._ack(message)
            log.info("duplicate %s absorbed by the inbox", event_type, extra=extra)
        elif outcome.disposition is Disposition.RETRY:
            close_old_connections()
            tiers = self.topology.tiers
            if attempt < len(tiers):
                self._forward(
                    message,
                    headers,
                    exchange=self.topology.retry_exchange,
                    routing_key=tiers[attempt],
                    extra_headers={
                        ATTEMPT_HEADER: attempt + 1,
                        LAST_ERROR_HEADER: outcome.reason[:MAX_HEADER_TEXT],
                    },
                )
                metrics.RETRIES.labels(self.service, event_type, tiers[attempt]).inc()
                log.warning(
                    "retrying %s in tier %s: %s", event_type, tiers[attempt], outcome.reason, extra=extra
                )
            else:
                self._park(
                    message,
                    headers,
                    attempt,
                    reason=f"retries exhausted after {attempt + 1} attempts",
                    last_error=outcome.reason,
                )
                log.error(
                    "parked %s after %d attempts: %s", event_type, attempt + 1, outcome.reason, extra=extra
                )
        else:
            self._park(message, headers, attempt, reason=outcome.reason, last_error="")
            log.error("parked %s: %s", event_type, outcome.reason, extra=extra)
        if outcome.disposition is Disposition.PARK or (
            outcome.disposition is Disposition.RETRY and attempt >= len(self.topology.tiers)
        ):
            metrics.PARKED.labels(self.service, event_type).inc()
        metrics.observe_delivery(self.service, event_type, outcome.disposition.value, seconds)

    # -- a batch ------------------------------------------------------------------------

    def _flush(self) -> None:
        """Handle what was collected: one transaction, one commit, one multiple-ack.

        Deliveries that cannot share the transaction are settled on their own first: a
        malformed or untrusted one is parked, a retried one (it carries an attempt count,
        and its success notes the retries on the saga's timeline) is handled alone. Every
        delivery of the channel with a tag below the batch's last is then either settled
        or in the batch, so the multiple-ack covers exactly the batch's deliveries.
        """
        messages, self._buffer = self._buffer, []
        self._disarm()
        started = time.perf_counter()
        batch: list[tuple[Message, dict[str, Any], Envelope, Registration]] = []
        for message in messages:
            headers = dict(message.headers or {})
            if not self._received(message, headers):
                continue
            if _attempt(headers):
                self._settling(message, self._handle_one, message, headers, started)
                continue
            read = read_delivery(
                raw_body(message),
                events=self.events,
                service=self.service,
                signature=headers.get(SIGNATURE_HEADER),
            )
            if isinstance(read, Outcome):
                self._settling(message, self._settle, message, headers, 0, read, 0.0)
                continue
            batch.append((message, headers, *read))
        if not batch:
            return
        metrics.BATCH_SIZE.labels(self.service).observe(len(batch))
        if len(batch) == 1:
            message, headers, _, _ = batch[0]
            self._settling(message, self._handle_one, message, headers, started)
            return
        try:
            outcomes = process_batch(
                [(envelope, registration) for _, _, envelope, registration in batch],
                events=self.events,
                service=self.service,
            )
        except Exception as exc:  # noqa: BLE001 - each delivery gets its own chance
            log.warning(
                "a batch of %d deliveries failed (%s: %s); handling each on its own",
                len(batch),
                type(exc).__name__,
                str(exc)[:500],
            )
            metrics.BATCHES.labels(self.service, "split").inc()
            for message, headers, _, _ in batch:
                self._settling(message, self._handle_one, message, headers, started)
            return
        for outcome in outcomes:
            if outcome.disposition is Disposition.HANDLED:
                faults.point(
                    "consumer.after_commit", service=self.service, event_type=outcome.envelope.event_type
                )
        last = batch[-1][0]
        self._settling(last, self._ack, last, multiple=True)
        seconds = (time.perf_counter() - started) / len(batch)
        metrics.BATCHES.labels(self.service, "committed").inc()
        for outcome in outcomes:
            extra = _log_extra(outcome, 0)
            if outcome.disposition is Disposition.HANDLED:
                log.info("handled %s", extra["event_type"], extra=extra)
            else:
                log.info("duplicate %s absorbed by the inbox", extra["event_type"], extra=extra)
            metrics.observe_delivery(self.service, extra["event_type"], outcome.disposition.value, seconds)

    # -- retry tiers and the parking lot ------------------------------------------------

    def _park(
        self, message: Message, headers: dict[str, Any], attempt: int, *, reason: str, last_error: str
    ) -> None:
        self._forward(
            message,
            {},
            exchange=self.topology.parked_exchange,
            routing_key="",
            extra_headers={
                PARK_REASON_HEADER: reason[:MAX_HEADER_TEXT],
                ATTEMPT_HEADER: attempt,
                LAST_ERROR_HEADER: last_error[:MAX_HEADER_TEXT],
                PARK_ID_HEADER: uuid.uuid4().hex,
                PARKED_AT_HEADER: utcnow().isoformat(),
                SERVICE_HEADER: self.service,
                ORIGINAL_HEADERS_HEADER: {k: v for k, v in headers.items() if k != ORIGINAL_HEADERS_HEADER},
            },
        )

    def _forward(
        self,
        message: Message,
        headers: dict[str, Any],
        *,
        exchange: Any,
        routing_key: str,
        extra_headers: dict[str, Any],
    ) -> None:
        """Publish a copy (confirmed), then ack the original: never zero copies."""
        properties = message.properties or {}
        self.publisher.publish(
            raw_body(message),
            exchange=exchange,
            routing_key=routing_key,
            headers={**headers, **extra_headers},
            message_id=properties.get("message_id"),
            message_type=properties.get("type"),
        )
        self._ack(message)

    def _ack(self, message: Message, *, multiple: bool = False) -> None:
        message.ack(multiple=multiple)
        metrics.ACKS.labels(self.service).inc()
