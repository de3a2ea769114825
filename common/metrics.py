"""Prometheus metrics of the saga machinery (workers and relays).

Every process of a service writes its samples to ``PROMETHEUS_MULTIPROC_DIR``
(``var/prometheus/<service>``, set by supervisor), and the service's web
``/metrics`` adds up all of them: workers and relays have no port of their own,
and counters survive the restart of the process that counted.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

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
