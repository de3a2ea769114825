"""The outbox relay: publishes committed outbox rows, oldest first, with confirms.

Fast path: the NOTIFY sent with every outbox insert wakes the relay on commit.
Guarantee: a sweep every ``SAGA_RELAY_SWEEP_SECONDS`` publishes whatever is
still unpublished (the relay was down, a NOTIFY was missed, the broker was
away). Rows are claimed with ``FOR UPDATE SKIP LOCKED``, so several relays can
run; a row is marked published only after the broker confirmed it. A crash
between the two republishes the row later: consumers' inboxes absorb that.
"""

from __future__ import annotations

import contextlib
import json
import logging
import select
import time

import psycopg2
from django.conf import settings
from django.db import close_old_connections, connection, transaction
from django.utils import timezone

from common import faults, metrics
from common.broker import Publisher
from common.messaging.models import OutboxMessage
from common.observability import publishing
from common.outbox import notify_channel
from common.topology import EVENTS_EXCHANGE, declare_shared

log = logging.getLogger("saga.relay")


class Relay:
    def __init__(self, *, publisher: Publisher | None = None) -> None:
        self.service: str = settings.SERVICE_NAME
        self.publisher = publisher or Publisher()
        self.batch: int = settings.SAGA_RELAY_BATCH
        self.sweep_seconds: float = settings.SAGA_RELAY_SWEEP_SECONDS
        self._listener = None
        self._stopping = False
        self._declared = False

    def stop(self) -> None:
        self._stopping = True

    def publish_pending(self) -> int:
        """Publish up to one batch of unpublished rows; return how many were published."""
        published: list[int] = []
        with transaction.atomic():
            rows = list(
                OutboxMessage.objects.select_for_update(skip_locked=True)
                .filter(published_at__isnull=True)
                .order_by("id")[: self.batch]
            )
            if not rows:
                return 0
            if not self._declared:
                declare_shared(self.publisher.connection().default_channel)
                self._declared = True
            error: Exception | None = None
            for row in rows:
                try:
                    self._publish(row)
                except Exception as exc:  # noqa: BLE001 - kept for the next sweep
                    error = exc
                    break
                published.append(row.id)
                metrics.OUTBOX_PUBLISHED.labels(self.service, row.event_type).inc()
            faults.point("relay.after_publish", service=self.service)
            now = timezone.now()
            OutboxMessage.objects.filter(id__in=published).update(published_at=now)
            if error is not None:
                failed = rows[len(published)]
                OutboxMessage.objects.filter(id=failed.id).update(
                    publish_attempts=failed.publish_attempts + 1, last_error=str(error)[:2000]
                )
        if error is not None:
            self._declared = False
            raise error
        return len(published)

    def _publish(self, row: OutboxMessage) -> None:
        envelope = json.loads(row.body)
        with publishing(
            service=self.service,
            event_type=row.event_type,
            saga_id=str(row.saga_id),
            trace_headers=envelope.get("trace") or {},
        ):
            self.publisher.publish(
                row.body,
                exchange=EVENTS_EXCHANGE,
                routing_key=row.routing_key,
                message_id=str(row.event_id),
                message_type=row.event_type,
            )

    def _listen(self) -> None:
        db = connection.settings_dict
        self._listener = psycopg2.connect(
            dbname=db["NAME"],
            user=db["USER"],
            password=db["PASSWORD"],
            host=db["HOST"],
            port=db["PORT"],
            connect_timeout=5,
        )
        self._listener.set_isolation_level(psycopg2.extensions.ISOLATION_LEVEL_AUTOCOMMIT)
        with self._listener.cursor() as cursor:
            cursor.execute(f'LISTEN "{notify_channel(self.service)}"')

    def _wait(self, timeout: float) -> None:
        """Sleep until a NOTIFY arrives or ``timeout`` passes."""
        try:
            if self._listener is None:
                self._listen()
            if select.select([self._listener], [], [], timeout) != ([], [], []):
                self._listener.poll()
                self._listener.notifies.clear()
        except (psycopg2.Error, OSError):
            log.warning("lost the LISTEN connection; reconnecting", exc_info=True)
            self._close_listener()
            time.sleep(min(timeout, 1.0))

    def _close_listener(self) -> None:
        if self._listener is not None:
            with contextlib.suppress(psycopg2.Error):
                self._listener.close()
        self._listener = None

    def _update_gauges(self) -> None:
        pending = OutboxMessage.objects.filter(published_at__isnull=True).order_by("id")
        oldest = pending.values_list("created_at", flat=True).first()
        metrics.OUTBOX_BACKLOG.labels(self.service).set(pending.count())
        age = (timezone.now() - oldest).total_seconds() if oldest else 0.0
        metrics.OUTBOX_OLDEST_AGE.labels(self.service).set(age)

    def run_forever(self) -> None:
        log.info(
            "outbox relay for %s started (batch %d, sweep every %.1fs)",
            self.service,
            self.batch,
            self.sweep_seconds,
        )
        backoff = 0.5
        while not self._stopping:
            try:
                close_old_connections()
                count = self.publish_pending()
                backoff = 0.5
                if count:
                    log.debug("published %d event(s)", count)
                if count >= self.batch:
                    continue
                self._update_gauges()
            except Exception:  # noqa: BLE001 - the relay must outlive broker and DB outages
                log.warning("relay cycle failed; retrying in %.1fs", backoff, exc_info=True)
                close_old_connections()
                connection.close()
                time.sleep(backoff)
                backoff = min(backoff * 2, 2.0)  # the broker or DB is back within seconds
                continue
            self._wait(self.sweep_seconds)
        self._close_listener()
        self.publisher.close()
