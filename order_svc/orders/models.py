from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from django.db import models
from django.utils import timezone

from common.errors import IllegalTransition, require_transition
from common.messaging.ids import new_id

__all__ = ["IllegalTransition", "Order", "OrderLine", "OrderStatus", "SagaEvent", "StuckOrder"]


class OrderStatus(models.TextChoices):
    PENDING = "PENDING"
    COMPENSATING = "COMPENSATING"
    COMPLETED = "COMPLETED"
    CANCELLED = "CANCELLED"
    REJECTED = "REJECTED"


TERMINAL_STATUSES = frozenset({OrderStatus.COMPLETED, OrderStatus.CANCELLED, OrderStatus.REJECTED})
OPEN_STATUSES = (OrderStatus.PENDING, OrderStatus.COMPENSATING)


class Order(models.Model):
    """The saga's record: PENDING, then COMPLETED or REJECTED, or COMPENSATING until every
    undo is confirmed, then CANCELLED. The transitions below are the only ones."""

    TRANSITIONS = {
        OrderStatus.PENDING: frozenset(
            {OrderStatus.REJECTED, OrderStatus.COMPLETED, OrderStatus.COMPENSATING}
        ),
        OrderStatus.COMPENSATING: frozenset({OrderStatus.CANCELLED}),
    }

    id = models.UUIDField(primary_key=True, default=new_id, editable=False)
    # Indexes are in Meta: every index is written again by each UPDATE that is not HOT, and
    # ``db_index=True`` on a CharField adds a second, ``LIKE``-only one on PostgreSQL.
    customer_id = models.CharField(max_length=64)
    status = models.CharField(max_length=16, choices=OrderStatus.choices, default=OrderStatus.PENDING)
    failure_reason = models.TextField(blank=True, default="")
    total = models.DecimalField(max_digits=14, decimal_places=2, null=True, blank=True)
    shipping_address = models.JSONField()
    idempotency_key = models.CharField(max_length=255, null=True, blank=True)
    request_fingerprint = models.CharField(max_length=64, blank=True, default="")
    compensations_expected = models.JSONField(default=list, blank=True)
    compensations_confirmed = models.JSONField(default=list, blank=True)
    trace_context = models.JSONField(
        default=dict, blank=True, help_text="W3C trace context of the saga (one order, one trace)."
    )
    deadline_at = models.DateTimeField()
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["customer_id"], name="order_customer"),
            # The deadline sweep and the stuck-saga list read only open orders. No index
            # holds ``status`` otherwise, so the saga's other updates can be HOT (the
            # table's fillfactor leaves them room: migration 0004).
            models.Index(
                fields=["deadline_at"],
                name="order_open_deadline",
                condition=models.Q(status__in=OPEN_STATUSES),
            ),
        ]
        constraints = [models.UniqueConstraint(fields=["idempotency_key"], name="order_idempotency_key")]

    def __str__(self) -> str:
        return f"order {self.id} ({self.status})"

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @property
    def compensations_pending(self) -> list[str]:
        confirmed = set(self.compensations_confirmed)
        return [name for name in self.compensations_expected if name not in confirmed]

    def _require(self, to: str) -> None:
        require_transition(self.TRANSITIONS, what=f"order {self.id}", current=self.status, to=to)

    def _finish(self, status: str, *, at: datetime | None = None) -> None:
        self.status = status
        self.finished_at = at or timezone.now()

    def price(self, *, total: Decimal) -> None:
        """Record what inventory priced; allowed in any state (it is a fact)."""
        self.total = total

    def mark_rejected(self, *, reason: str) -> None:
        self._require(OrderStatus.REJECTED)
        self.failure_reason = reason
        self._finish(OrderStatus.REJECTED)

    def mark_completed(self) -> None:
        self._require(OrderStatus.COMPLETED)
        self._finish(OrderStatus.COMPLETED)

    def start_compensation(self, *, reason: str, expected: list[str]) -> None:
        """Go COMPENSATING until every event in ``expected`` confirmed its undo."""
        self._require(OrderStatus.COMPENSATING)
        self.status = OrderStatus.COMPENSATING
        self.failure_reason = reason
        self.compensations_expected = sorted(set(expected))
        self._cancel_if_compensated()

    def confirm_compensation(self, event_type: str) -> None:
        """A compensation was confirmed; it may arrive before the failure itself."""
        if event_type not in self.compensations_confirmed:
            self.compensations_confirmed = [*self.compensations_confirmed, event_type]
        if self.status == OrderStatus.COMPENSATING:
            self._cancel_if_compensated()

    def _cancel_if_compensated(self) -> None:
        if not self.compensations_pending:
            self._require(OrderStatus.CANCELLED)
            self._finish(OrderStatus.CANCELLED)


class OrderLine(models.Model):
    # No index of its own: orderline_unique_sku (order, sku) starts with it.
    order = models.ForeignKey(Order, on_delete=models.CASCADE, related_name="lines", db_index=False)
    sku = models.CharField(max_length=64)
    quantity = models.PositiveIntegerField()
    unit_price = models.DecimalField(max_digits=12, decimal_places=2, null=True, blank=True)

    class Meta:
        ordering = ["sku"]
        constraints = [models.UniqueConstraint(fields=["order", "sku"], name="orderline_unique_sku")]

    def __str__(self) -> str:
        return f"{self.quantity} × {self.sku}"


class SagaEvent(models.Model):
    """One step of an order's saga, whichever service produced it (the timeline)."""

    # No index of its own: sagaevent_order_time starts with it.
    order = models.ForeignKey(Order, on_delete=models.CASCADE, related_name="timeline", db_index=False)
    event_id = models.UUIDField(unique=True)
    event_type = models.CharField(max_length=64)
    service = models.CharField(max_length=32)
    occurred_at = models.DateTimeField()
    recorded_at = models.DateTimeField(default=timezone.now)
    causation_id = models.UUIDField(null=True, blank=True)
    payload = models.JSONField(default=dict)

    class Meta:
        ordering = ["occurred_at", "id"]
        indexes = [models.Index(fields=["order", "occurred_at"], name="sagaevent_order_time")]

    def __str__(self) -> str:
        return f"{self.event_type} from {self.service}"


class StuckOrder(Order):
    """Orders not terminal after their deadline: the operator's worklist (admin only)."""

    class Meta:
        proxy = True
        verbose_name = "stuck saga"
        verbose_name_plural = "stuck sagas"
