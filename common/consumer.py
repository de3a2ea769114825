"""Consuming events: decode, validate, dedup, handle, and decide ack / retry / park.

``process_delivery`` is the whole decision, independent of the broker so it can
be unit-tested; ``EventConsumer`` wires it to a kombu message: it acks only
after the handler's transaction committed, and moves failures to this
service's retry tiers or parking lot (publish with confirm first, then ack, so
a crash in between can only duplicate, which the inbox absorbs).
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

from common import faults, metrics
from common.broker import Publisher, registry, topology
from common.context import handling
from common.contracts import validate_envelope
from common.envelope import Envelope, EnvelopeError, utcnow
from common.inbox import inbox_claim
from common.observability import consuming, trace_id_of
from common.parking import (
    ATTEMPT_HEADER,
    LAST_ERROR_HEADER,
    ORIGINAL_HEADERS_HEADER,
    PARK_ID_HEADER,
    PARK_REASON_HEADER,
    PARKED_AT_HEADER,
    parked_ingest,
)
from common.registry import EventRegistry
from common.sagas import note_retried
from common.signing import SIGNATURE_HEADER, distrust

log = logging.getLogger("saga.consumer")

SERVICE_HEADER = "x-saga-service"
MAX_HEADER_TEXT = 2000


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


def process_delivery(
    body: bytes,
    *,
    events: EventRegistry,
    service: str,
    signature: object = None,
    attempt: int = 0,
    last_error: str = "",
) -> Outcome:
    """Handle one delivery's body; never raises for a bad message or a failing handler.

    ``signature`` is the delivery's ``x-saga-signature`` header: an event that is not
    signed by the producer it names, or from a producer not allowed to emit its type,
    is parked with the reason and never handled (common/signing.py).
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


def _handle(envelope: Envelope, registration: Any, *, service: str, attempt: int, last_error: str) -> Outcome:
    """One transaction: the saga's lock, the inbox row, the handler's effect and its events."""
    with (
        consuming(
            service=service,
            event_type=envelope.event_type,
            saga_id=envelope.saga_id,
            event_id=envelope.event_id,
            trace_headers=envelope.trace,
        ) as span,
        transaction.atomic(),
    ):
        if not inbox_claim(envelope):
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
    """Consumes this service's events queue; one message at a time per process."""

    def __init__(self) -> None:
        self.service: str = settings.SERVICE_NAME
        self.events = registry()
        self.topology = topology()
        self.publisher = Publisher()

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
        # Prefetch: enough to hide the broker round trip while one message is
        # handled, small enough that a crashed worker strands little and that
        # several worker processes share a burst fairly.
        return Consumer(
            channel,
            queues=[self.topology.events_queue],
            on_message=self.on_message,
            prefetch_count=settings.SAGA_PREFETCH,
            accept=None,
        )

    def on_message(self, message: Message) -> None:
        try:
            self._on_message(message)
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

    def _on_message(self, message: Message) -> None:
        # No close_old_connections() here: with persistent connections it would only add a
        # health-check round trip per delivery; a lost connection is detected and replaced
        # by process_delivery, and closed after any failure below.
        started = time.perf_counter()
        headers = dict(message.headers or {})
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
            return
        attempt = _attempt(headers)
        outcome = process_delivery(
            raw_body(message),
            events=self.events,
            service=self.service,
            signature=headers.get(SIGNATURE_HEADER),
            attempt=attempt,
            last_error=str(headers.get(LAST_ERROR_HEADER) or ""),
        )
        extra = _log_extra(outcome, attempt)
        event_type = extra["event_type"] or "unknown"
        if outcome.disposition is Disposition.HANDLED:
            faults.point("consumer.after_commit", service=self.service, event_type=event_type)
            message.ack()
            log.info("handled %s", event_type, extra=extra)
        elif outcome.disposition is Disposition.DUPLICATE:
            message.ack()
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
        metrics.observe_delivery(
            self.service, event_type, outcome.disposition.value, time.perf_counter() - started
        )

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
        message.ack()
