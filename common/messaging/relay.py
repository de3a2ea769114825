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
from django.db import connection, transaction

from common.messaging import faults
from common.messaging.broker import BatchPublisher, outgoing
from common.messaging.flow import FlowRollup
from common.messaging.models import OutboxMessage
from common.messaging.outbox import notify_channel, outbox_backlog
from common.messaging.purge import PeriodicPurge
from common.messaging.topology import declare_shared
from common.observability import metrics
from common.observability.tracing import publishing_each, tracing_enabled

log = logging.getLogger("saga.relay")


TABLE = OutboxMessage._meta.db_table
GAUGE_SECONDS = 1.0  # how often the backlog gauges are refreshed (two queries)


class Relay:
    def __init__(self, *, publisher: BatchPublisher | None = None) -> None:
        self.service: str = settings.SERVICE_NAME
        self.publisher = publisher or BatchPublisher()
        self.batch: int = settings.SAGA_RELAY_BATCH
        self.sweep_seconds: float = settings.SAGA_RELAY_SWEEP_SECONDS
        self._listener = None
        self._stopping = False
        self._declared = False
        self._gauges_at = 0.0
        # Housekeeping of this service's inbox and outbox (common/messaging/purge.py): the relay is the
        # one long-running loop per service with database access, so it runs it when idle.
        self._purge = PeriodicPurge.from_settings()
        self._flow = FlowRollup()  # the saga map's figures and this relay's heartbeat

    def stop(self) -> None:
        self._stopping = True

    def publish_pending(self) -> int:
        """Publish up to one batch of unpublished rows; return how many were published.

        The batch is published in one go and its confirms awaited together (one broker
        round trip per batch, not per row); only confirmed rows are marked published, in
        the transaction that claimed them.
        """
        with transaction.atomic(), connection.cursor() as cursor:
            # Publishing on commit, a fresh row is probably being published right now by the
            # process that wrote it: leave it that long (a copy would be harmless, but waste).
            fresh = (
                [settings.SAGA_RELAY_GRACE_SECONDS] if settings.SAGA_PUBLISH_ON_COMMIT else []
            )  # and only then: with NOTIFY, the row just committed is the one to publish
            cursor.execute(
                f"SELECT id, event_id, event_type, routing_key, saga_id, body, publish_attempts FROM {TABLE}"
                " WHERE published_at IS NULL"
                + (" AND created_at <= now() - %s * interval '1 second'" if fresh else "")
                + " ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED",
                [*fresh, self.batch],
            )
            rows = cursor.fetchall()
            if not rows:
                return 0
            if not self._declared:
                declare_shared(self.publisher.connection().default_channel)
                self._declared = True
            error: Exception | None = None
            try:
                with self._spans(rows):
                    confirmed = self.publisher.publish_batch(
                        [
                            outgoing(body=body, event_id=event_id, event_type=event_type, routing_key=key)
                            for _, event_id, event_type, key, _, body, _ in rows
                        ]
                    )
            except Exception as exc:  # noqa: BLE001 - kept for the next sweep
                error, confirmed = exc, [False] * len(rows)
            published = [row for row, ok in zip(rows, confirmed, strict=True) if ok]
            for row in published:
                metrics.OUTBOX_PUBLISHED.labels(self.service, row[2]).inc()
            faults.point("relay.after_publish", service=self.service)
            if published:
                cursor.execute(
                    f"UPDATE {TABLE} SET published_at = now() WHERE id = ANY(%s)", [[r[0] for r in published]]
                )
            failed = [row for row, ok in zip(rows, confirmed, strict=True) if not ok]
            if failed:
                error = error or RuntimeError("the broker did not confirm the publish (nack or timeout)")
                cursor.execute(
                    f"UPDATE {TABLE} SET publish_attempts = publish_attempts + 1, last_error = %s"
                    " WHERE id = ANY(%s)",
                    [str(error)[:2000], [r[0] for r in failed]],
                )
        if error is not None:
            self._declared = False
            raise error
        return len(published)

    def _spans(self, rows: list[tuple]) -> contextlib.AbstractContextManager[None]:
        """One publish span per row, each continuing its saga's trace (none when tracing is off)."""
        if not tracing_enabled():
            return contextlib.nullcontext()
        return publishing_each(
            self.service,
            [
                (event_type, str(saga_id), json.loads(body).get("trace") or {})
                for _, _, event_type, _, saga_id, body, _ in rows
            ],
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
        if time.monotonic() - self._gauges_at < GAUGE_SECONDS:
            return
        self._gauges_at = time.monotonic()
        backlog = outbox_backlog()
        metrics.OUTBOX_BACKLOG.labels(self.service).set(backlog.unpublished)
        metrics.OUTBOX_OLDEST_AGE.labels(self.service).set(backlog.oldest_seconds or 0.0)

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
                count = self.publish_pending()
                backoff = 0.5
                if count:
                    log.debug("published %d event(s)", count)
                if count >= self.batch:
                    continue
                self._update_gauges()
                self._flow.roll_if_due()  # logs its own failures, like the purge
                self._purge.purge_if_due()  # logs its own failures: never stops publishing
                self.publisher.keep_alive()  # it publishes rarely (the pushers do): heartbeats
            except Exception:  # noqa: BLE001 - the relay must outlive broker and DB outages
                log.warning("relay cycle failed; retrying in %.1fs", backoff, exc_info=True)
                connection.close()
                time.sleep(backoff)
                backoff = min(backoff * 2, 2.0)  # the broker or DB is back within seconds
                continue
            self._wait(self.sweep_seconds)
        self._close_listener()
        self.publisher.close()
