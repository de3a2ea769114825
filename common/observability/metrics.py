"""Prometheus metrics of the saga machinery (workers and relays).

On one machine (the local stack) every process of a service writes its samples to
``PROMETHEUS_MULTIPROC_DIR`` (``var/prometheus/<service>``, set by supervisor), and the
service's web ``/metrics`` adds up all of them: workers and relays need no port of their
own, and counters survive the restart of the process that counted.

On a cluster (compose.yaml) a service's processes run in separate containers, which
share no directory and whose PIDs collide, so there a worker or relay serves its own
``/metrics`` on ``SAGA_METRICS_PORT`` (:func:`start_metrics_server`), and Prometheus
scrapes every replica. The relay's endpoint also carries gauges read from the database
at scrape time (:class:`DatabaseGauges`): parked messages and stuck sagas, what an
operator has to act on, whichever process or the broker itself put them there.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import connections
from prometheus_client import REGISTRY, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily

log = logging.getLogger("saga.metrics")

DELIVERIES = Counter(
    "saga_deliveries_total",
    "Event deliveries by how they were settled (handled, duplicate, retry, park).",
    ["service", "event_type", "outcome"],
)
HANDLER_SECONDS = Histogram(
    "saga_handler_seconds",
    "Time to process one delivery, from receipt to settlement.",
    ["service", "event_type"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
BATCH_SIZE = Histogram(
    "saga_batch_size",
    "Deliveries handled in one group-commit transaction (one commit, one multiple-ack).",
    ["service"],
    buckets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64),
)
ACKS = Counter(
    "saga_acks_total",
    "basic.ack frames sent for the events queue (one per batch with multiple=True, one per lone delivery).",
    ["service"],
)
BATCHES = Counter(
    "saga_batches_total",
    "Group-commit batches: committed, or split (something failed: each delivery handled alone).",
    ["service", "outcome"],
)
OCC_CONFLICTS = Counter(
    "saga_occ_conflicts_total",
    "Optimistic-concurrency conflicts (a version-checked UPDATE matched no row).",
    ["service", "entity"],
)
OUTBOX_PUBLISHED = Counter(
    "saga_outbox_published_total", "Events published by the relay.", ["service", "event_type"]
)
# Gauges set by the relay: the most recent value of any process is the truth.
OUTBOX_BACKLOG = Gauge(
    "saga_outbox_backlog", "Unpublished outbox rows.", ["service"], multiprocess_mode="mostrecent"
)
OUTBOX_OLDEST_AGE = Gauge(
    "saga_outbox_oldest_unpublished_seconds",
    "Age of the oldest unpublished outbox row.",
    ["service"],
    multiprocess_mode="mostrecent",
)


def observe_delivery(service: str, event_type: str, outcome: str, seconds: float) -> None:
    DELIVERIES.labels(service, event_type, outcome).inc()
    HANDLER_SECONDS.labels(service, event_type).observe(seconds)


OCC_EXHAUSTED = Counter(
    "saga_occ_retries_exhausted_total",
    "Handlers that met a version conflict on every bounded attempt (→ the retry tiers).",
    ["service", "entity"],
)
RETRIES = Counter(
    "saga_retries_total", "Deliveries sent to a retry tier, by tier.", ["service", "event_type", "tier"]
)
PARKED = Counter("saga_parked_total", "Deliveries moved to the parking lot.", ["service", "event_type"])


# ---------------------------------------------------------------- gauges read from the database

# An order not terminal this long after its deadline is stuck (the audit's --grace default):
# the deadline sweep cancels within a second, compensations take milliseconds.
DEFAULT_STUCK_GRACE_SECONDS = 60.0


@dataclass(frozen=True)
class DatabaseState:
    """What :class:`DatabaseGauges` reports; ``stuck`` only where a reader is registered."""

    parked: int
    stuck: dict[str, int] | None = None


# The apps that own the tables register how to count what the gauges report: the
# messaging app its parked messages, the order app its stuck sagas (each in its
# AppConfig.ready()). This module knows no table.
ParkedReader = Callable[[], int]
StuckReader = Callable[[float], dict[str, int]]  # grace seconds -> {status: count}
_parked_reader: list[ParkedReader] = []  # at most one each: the service's own
_stuck_reader: list[StuckReader] = []


def register_parked_messages(reader: ParkedReader) -> None:
    """This service reports ``saga_parked_messages``, counted by ``reader`` at scrape time."""
    _parked_reader[:] = [reader]


def register_stuck_sagas(reader: StuckReader) -> None:
    """This service reports ``saga_stuck_sagas``, counted by ``reader`` at scrape time."""
    _stuck_reader[:] = [reader]


def read_database_state(service: str) -> DatabaseState:
    """Count parked messages (and stuck sagas by status, where a reader is registered)."""
    if not _parked_reader:  # Django not set up: better no sample than a false 0
        raise RuntimeError("no parked-message reader registered (the messaging app is not loaded)")
    parked = _parked_reader[0]()
    if not _stuck_reader:
        return DatabaseState(parked)
    grace = float(getattr(settings, "SAGA_STUCK_GRACE_SECONDS", DEFAULT_STUCK_GRACE_SECONDS))
    return DatabaseState(parked, _stuck_reader[0](grace))


class DatabaseGauges:
    """Gauges evaluated at scrape time from this service's database.

    Counters say that something happened; these say that it is still so. A message the
    broker dead-lettered itself (past the delivery limit) is parked without our
    ``saga_parked_total`` counting it; only the table knows. A failing read yields no
    samples, never a failed scrape: ``up`` must keep meaning "the process is alive".
    """

    def __init__(self, service: str, read: Callable[[str], DatabaseState] | None = None) -> None:
        self.service = service
        self._read = read if read is not None else read_database_state

    def _families(self, stuck: bool) -> tuple[GaugeMetricFamily, GaugeMetricFamily | None]:
        parked = GaugeMetricFamily(
            "saga_parked_messages",
            "Parked messages waiting for an operator to replay or discard them.",
            labels=["service"],
        )
        if not stuck:
            return parked, None
        return parked, GaugeMetricFamily(
            "saga_stuck_sagas",
            "Sagas not terminal a grace period (SAGA_STUCK_GRACE_SECONDS, 60) after their deadline.",
            labels=["service", "status"],
        )

    def describe(self) -> Iterable[GaugeMetricFamily]:
        # Names only: without describe() the registry would collect (query) on registration.
        return [family for family in self._families(bool(_stuck_reader)) if family is not None]

    def collect(self) -> Iterable[GaugeMetricFamily]:
        try:
            state = self._read(self.service)
        except Exception:  # noqa: BLE001 - a scrape must not fail because the database did
            log.warning("could not read the database gauges of %s", self.service, exc_info=True)
            return []
        finally:
            _close_thread_connections()
        parked, stuck = self._families(state.stuck is not None)
        parked.add_metric([self.service], state.parked)
        if stuck is None or state.stuck is None:
            return [parked]
        for status, count in sorted(state.stuck.items()):
            stuck.add_metric([self.service, status], count)
        return [parked, stuck]


def _close_thread_connections() -> None:
    """Close the scrape thread's database connection (each scrape runs in a new thread)."""
    if threading.current_thread() is threading.main_thread():
        return  # the process's own connection: leave it to its owner
    try:
        connections.close_all()
    except Exception:  # noqa: BLE001 - closing is best effort, the scrape goes on
        log.debug("could not close the scrape thread's database connections", exc_info=True)


# ---------------------------------------------------------------- a process's own /metrics

METRICS_PORT_ENV = "SAGA_METRICS_PORT"
METRICS_ADDRESS_ENV = "SAGA_METRICS_ADDRESS"

_server_lock = threading.Lock()
_servers: dict[int, Any] = {}  # pid -> its server: once per process, even if called again after a fork
_database_gauges: dict[str, DatabaseGauges] = {}  # service -> its collector, registered once


def metrics_port() -> int | None:
    """``SAGA_METRICS_PORT`` as a port number; None when unset (0: any free port)."""
    raw = os.environ.get(METRICS_PORT_ENV, "").strip()
    if not raw:
        return None
    try:
        port = int(raw)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise ValueError(f"{METRICS_PORT_ENV}={raw!r} is not a TCP port number (0-65535)")
    return port


def start_metrics_server(*, database_gauges_of: str | None = None) -> int | None:
    """Serve this process's metrics on ``SAGA_METRICS_PORT``; the port, or None if unset.

    Called at the start of a worker (common/messaging/celery.py) and of a relay; a second call in
    the same process returns the same port. Binds ``SAGA_METRICS_ADDRESS`` (127.0.0.1
    unless set: compose sets 0.0.0.0 so that Prometheus reaches every replica). A port
    already taken is logged, not raised: a worker without metrics still does its work,
    and Prometheus reports its target down. ``database_gauges_of``: also serve
    :class:`DatabaseGauges` of that service (the relay does; one process per service
    kind is enough).
    """
    port = metrics_port()
    if port is None:
        return None
    address = os.environ.get(METRICS_ADDRESS_ENV, "").strip() or "127.0.0.1"
    with _server_lock:
        pid = os.getpid()
        if pid in _servers:
            return _servers[pid].server_port
        if database_gauges_of and database_gauges_of not in _database_gauges:
            _database_gauges[database_gauges_of] = DatabaseGauges(database_gauges_of)
            REGISTRY.register(_database_gauges[database_gauges_of])
        try:
            server, _ = start_http_server(port, addr=address, registry=REGISTRY)
        except OSError as exc:
            log.warning("cannot serve metrics on %s:%s: %s", address, port, exc)
            return None
        _servers[pid] = server
        log.info("serving metrics on http://%s:%d/metrics", address, server.server_port)
        return server.server_port
