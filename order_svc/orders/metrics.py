"""Saga-level metrics: only the Order service sees a saga start and finish."""

from __future__ import annotations

from django.db import transaction
from prometheus_client import Counter, Histogram

from order_svc.orders.models import Order

SAGAS_STARTED = Counter("saga_started_total", "Sagas started (orders placed).")
SAGAS_FINISHED = Counter("saga_finished_total", "Sagas that reached a terminal state.", ["outcome"])
SAGA_SECONDS = Histogram(
    "saga_duration_seconds",
    "From POST /api/orders/ to the terminal state.",
    ["outcome"],
    buckets=(0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)


def saga_started() -> None:
    transaction.on_commit(SAGAS_STARTED.inc)


def saga_finished_if_terminal(order: Order, *, was: str) -> None:
    """Count the saga once, when this transaction moved it into a terminal state."""
    if not order.is_terminal or was == order.status or order.finished_at is None:
        return
    seconds = (order.finished_at - order.created_at).total_seconds()
    outcome = order.status

    def count() -> None:
        SAGAS_FINISHED.labels(outcome).inc()
        SAGA_SECONDS.labels(outcome).observe(seconds)

    transaction.on_commit(count)
