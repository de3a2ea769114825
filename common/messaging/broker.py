"""Publishing to RabbitMQ with publisher confirms and persistent delivery.

One ``Publisher`` per process (relay, or a worker that moves messages to its
retry tiers and parking lot). ``publish`` returns only once the broker confirmed
the message; any failure raises and the caller keeps the message for later.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from amqp.exceptions import MessageNacked
from django.conf import settings
from django.utils.module_loading import import_string
from kombu import Connection, Exchange, Producer

from common.messaging.registry import EventRegistry
from common.messaging.signing import signed_headers
from common.messaging.topology import EVENTS_EXCHANGE, ServiceTopology, service_topology

# How every saga event goes on the wire: a JSON body, persisted by the broker.
WIRE = {"content_type": "application/json", "content_encoding": "utf-8", "delivery_mode": 2}
log = logging.getLogger(__name__)

BROKER_TIMEOUT_SECONDS = 5


def broker_connection(url: str | None = None, *, confirm_each: bool = True) -> Connection:
    return Connection(
        url or settings.SAGA_BROKER_URL,
        transport_options={"confirm_publish": confirm_each},
        connect_timeout=BROKER_TIMEOUT_SECONDS,
        heartbeat=30,
    )


@cache
def registry() -> EventRegistry:
    return import_string(settings.SAGA_HANDLERS)


@cache
def topology() -> ServiceTopology:
    return service_topology(
        settings.SERVICE_NAME,
        registry().routing_keys,
        settings.SAGA_RETRY_DELAYS_MS,
        settings.SAGA_QUEUE_TYPE,
        retired_keys=tuple(registry().retired_routing_keys),
    )


def _connect(connection: Connection) -> None:
    """Connect now or fail within seconds: one retry, 0.2 s later (kombu's default waits 2 s)."""
    connection.ensure_connection(max_retries=1, interval_start=0.2, timeout=BROKER_TIMEOUT_SECONDS)


class _BrokerClient:
    """One lazily opened broker connection with a producer; closed (to reopen) on error."""

    def __init__(self, url: str | None = None) -> None:
        self._url = url
        self._connection: Connection | None = None
        self._producer: Producer | None = None

    def _ensure(self) -> Producer:
        raise NotImplementedError

    def connection(self) -> Connection:
        """The (connected) broker connection, e.g. to declare topology on it."""
        self._ensure()
        assert self._connection is not None
        return self._connection

    def keep_alive(self) -> None:
        """Call now and then while idle: read the broker's heartbeats and send ours.

        Nothing reads an idle publisher's socket, so the broker's heartbeats go unanswered
        and it drops the connection after two intervals (``heartbeat=30``: a minute). A
        connection found dead here is closed, and opened again on next use.
        """
        if self._connection is None:
            return
        try:
            with contextlib.suppress(TimeoutError):  # nothing to read: the usual case
                self._connection.drain_events(timeout=0)
            self._connection.heartbeat_check()
        except Exception:  # noqa: BLE001 - any failure means: reconnect on next use
            log.info("broker connection lost while idle; reconnecting on next use", exc_info=True)
            self.close()

    def close(self) -> None:
        if self._connection is not None:
            try:
                self._connection.release()
            except Exception:  # noqa: BLE001 - closing a broken connection is best effort
                log.debug("error while closing broker connection", exc_info=True)
        self._connection = None
        self._producer = None


class Publisher(_BrokerClient):
    """Publishes one message at a time, each confirmed before ``publish`` returns."""

    def _ensure(self) -> Producer:
        if self._producer is None:
            self._connection = broker_connection(self._url)
            _connect(self._connection)
            self._producer = Producer(self._connection.channel())
        return self._producer

    def publish(
        self,
        body: str | bytes,
        *,
        exchange: Exchange | str,
        routing_key: str,
        headers: dict[str, Any] | None = None,
        message_id: str | None = None,
        message_type: str | None = None,
    ) -> None:
        """Publish persistently and wait for the broker's confirm.

        A connection that broke since the last publish (a network cut, a broker restart)
        is replaced and the publish tried once more at once; a second failure raises.
        Publishing twice is harmless: every consumer's inbox absorbs a copy.
        """
        for last_try in (False, True):
            producer = self._ensure()
            try:
                producer.publish(
                    body,
                    exchange=exchange,
                    routing_key=routing_key,
                    headers=headers or {},
                    **WIRE,
                    message_id=message_id,
                    type=message_type,
                    retry=False,
                )
                return
            except MessageNacked:
                self.close()
                raise
            except Exception:
                self.close()
                if last_try:
                    raise
                log.info("broker connection lost while publishing; reconnecting once")


@dataclass(frozen=True)
class Outgoing:
    """One message for :meth:`BatchPublisher.publish_batch`."""

    body: str | bytes
    exchange: Exchange | str
    routing_key: str
    message_id: str | None = None
    message_type: str | None = None
    headers: dict[str, Any] = field(default_factory=dict)


def outgoing(*, body: str, event_id: str, event_type: str, routing_key: str) -> Outgoing:
    """An outbox row as published — to saga.events, persistent, signed by this service —
    by the pusher (common/messaging/direct.py) and the relay (common/messaging/relay.py) alike."""
    return Outgoing(
        body=body,
        exchange=EVENTS_EXCHANGE,
        routing_key=routing_key,
        message_id=str(event_id),
        message_type=event_type,
        headers=signed_headers(body),
    )


class BatchPublisher(_BrokerClient):
    """Publishes a batch, then waits for the broker's confirms of the whole batch.

    Persistent messages and publisher confirms as with :class:`Publisher`, but the
    round trip to the broker (and its fsync) is paid once per batch, not once per
    message. ``publish_batch`` says which messages were confirmed: a message is only
    ever reported confirmed after the broker acknowledged it.
    """

    def __init__(self, url: str | None = None) -> None:
        super().__init__(url)
        self._channel: Any = None
        self._tag = 0  # delivery tag of the last message published on this channel
        self._acked_upto = 0  # every tag <= this one was acked ("multiple" acks)
        self._acked: set[int] = set()
        self._nacked: set[int] = set()

    def _ensure(self) -> Producer:
        if self._producer is None:
            self._connection = broker_connection(self._url, confirm_each=False)
            _connect(self._connection)
            self._channel = self._connection.channel()
            self._channel.confirm_select()
            self._channel.events["basic_ack"].add(self._on_ack)
            self._channel.events["basic_nack"].add(self._on_nack)
            self._tag = self._acked_upto = 0
            self._acked, self._nacked = set(), set()
            self._producer = Producer(self._channel)
        return self._producer

    def _on_ack(self, tag: int, multiple: bool) -> None:
        if multiple:
            self._acked_upto = max(self._acked_upto, tag)
        else:
            self._acked.add(tag)

    def _on_nack(self, tag: int, multiple: bool) -> None:
        if multiple:
            self._nacked.update(t for t in range(self._acked_upto + 1, tag + 1) if t not in self._acked)
            self._acked_upto = max(self._acked_upto, tag)
        else:
            self._nacked.add(tag)

    def _confirmed(self, tag: int) -> bool:
        return tag not in self._nacked and (tag <= self._acked_upto or tag in self._acked)

    def publish_batch(
        self, messages: list[Outgoing], *, timeout: float = BROKER_TIMEOUT_SECONDS
    ) -> list[bool]:
        """Publish every message, wait for their confirms; True for each one the broker confirmed.

        A connection that broke since the last batch (the broker dropped an idle connection,
        restarted, or the network cut it) is replaced and the batch published once more at
        once, as :meth:`Publisher.publish` does; a second failure raises (then nothing is
        reported confirmed). A nacked or unconfirmed message comes back False, to be
        published again later. Publishing twice is harmless: the consumers' inboxes.
        """
        reused = self._producer is not None
        try:
            return self._publish_batch(messages, timeout)
        except Exception:
            if not reused:
                raise  # a connection opened just now: trying again at once would fail the same way
            log.info("broker connection lost since the last batch; reconnecting once")
        return self._publish_batch(messages, timeout)

    def _publish_batch(self, messages: list[Outgoing], timeout: float) -> list[bool]:
        producer = self._ensure()
        tags: list[int] = []
        try:
            for message in messages:
                producer.publish(
                    message.body,
                    exchange=message.exchange,
                    routing_key=message.routing_key,
                    headers=message.headers,
                    **WIRE,
                    message_id=message.message_id,
                    type=message.message_type,
                    retry=False,
                )
                self._tag += 1
                tags.append(self._tag)
            deadline = time.monotonic() + timeout
            while not all(t <= self._acked_upto or t in self._acked or t in self._nacked for t in tags):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    self.connection().drain_events(timeout=min(left, 1.0))
                except TimeoutError:
                    continue
        except Exception:
            self.close()
            raise
        confirmed = [self._confirmed(t) for t in tags]
        self._acked = {t for t in self._acked if t > self._acked_upto}
        self._nacked.difference_update(tags)
        if not all(confirmed):
            self.close()  # unanswered confirms: start again on a fresh channel
        return confirmed

    def close(self) -> None:
        super().close()
        self._channel = None
