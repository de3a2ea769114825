"""Publishing to RabbitMQ with publisher confirms and persistent delivery.

One ``Publisher`` per process (relay, or a worker that moves messages to its
retry tiers and parking lot). ``publish`` returns only once the broker confirmed
the message; any failure raises and the caller keeps the message for later.
"""

from __future__ import annotations

import logging
from functools import cache
from typing import Any

from django.conf import settings
from django.utils.module_loading import import_string
from kombu import Connection, Exchange, Producer

from common.registry import EventRegistry
from common.topology import ServiceTopology, service_topology

log = logging.getLogger(__name__)

BROKER_TIMEOUT_SECONDS = 5


def broker_connection(url: str | None = None) -> Connection:
    return Connection(
        url or settings.SAGA_BROKER_URL,
        transport_options={"confirm_publish": True},
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
    )


class Publisher:
    def __init__(self, url: str | None = None) -> None:
        self._url = url
        self._connection: Connection | None = None
        self._producer: Producer | None = None

    def _ensure(self) -> Producer:
        if self._producer is None:
            self._connection = broker_connection(self._url)
            self._connection.ensure_connection(max_retries=1, timeout=BROKER_TIMEOUT_SECONDS)
            self._producer = Producer(self._connection.channel())
        return self._producer

    def connection(self) -> Connection:
        """The (connected) broker connection, e.g. to declare topology on it."""
        self._ensure()
        assert self._connection is not None
        return self._connection

    def close(self) -> None:
        if self._connection is not None:
            try:
                self._connection.release()
            except Exception:  # noqa: BLE001 - closing a broken connection is best effort
                log.debug("error while closing broker connection", exc_info=True)
        self._connection = None
        self._producer = None

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
        """Publish persistently and wait for the broker's confirm; reconnect next time on error."""
        producer = self._ensure()
        try:
            producer.publish(
                body,
                exchange=exchange,
                routing_key=routing_key,
                headers=headers or {},
                content_type="application/json",
                content_encoding="utf-8",
                delivery_mode=2,
                message_id=message_id,
                type=message_type,
                retry=False,
            )
        except Exception:
            self.close()
            raise
