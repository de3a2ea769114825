from __future__ import annotations

from django.db import models
from django.utils import timezone

from common.errors import require_transition
from common.messaging.ids import new_id


class ReservationStatus(models.TextChoices):
    RESERVED = "RESERVED"
    RELEASED = "RELEASED"
    DEDUCTED = "DEDUCTED"


class Product(models.Model):
    """Stock of one sku. ``version`` guards every change (optimistic concurrency).

    Conservation: ``received = available + reserved + Σ deducted``.
    """

    sku = models.CharField(max_length=64, primary_key=True)
    name = models.CharField(max_length=200)
    price = models.DecimalField(max_digits=12, decimal_places=2)
    available = models.IntegerField()
    reserved = models.IntegerField(default=0)
    received = models.IntegerField(help_text="All stock ever received for this sku.")
    version = models.PositiveIntegerField(default=1)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["sku"]
        constraints = [
            models.CheckConstraint(condition=models.Q(available__gte=0), name="product_available_gte_0"),
            models.CheckConstraint(condition=models.Q(reserved__gte=0), name="product_reserved_gte_0"),
        ]

    def __str__(self) -> str:
        return f"{self.sku} ({self.available} available, {self.reserved} reserved)"


class Reservation(models.Model):
    """One line of an order, held from stock: RESERVED, then RELEASED (given back) or
    DEDUCTED (the order completed); both are final."""

    TRANSITIONS = {
        ReservationStatus.RESERVED: frozenset({ReservationStatus.RELEASED, ReservationStatus.DEDUCTED}),
    }

    id = models.UUIDField(primary_key=True, default=new_id, editable=False)
    order_id = models.UUIDField(db_index=True)
    product = models.ForeignKey(Product, on_delete=models.PROTECT, related_name="reservations")
    quantity = models.PositiveIntegerField()
    unit_price = models.DecimalField(max_digits=12, decimal_places=2)
    status = models.CharField(
        max_length=16, choices=ReservationStatus.choices, default=ReservationStatus.RESERVED
    )
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["order_id", "product_id"]
        constraints = [
            models.UniqueConstraint(fields=["order_id", "product"], name="reservation_unique_line")
        ]

    def __str__(self) -> str:
        return f"{self.quantity} × {self.product_id} for {self.order_id} ({self.status})"

    @classmethod
    def require(cls, *, order_id: str, current: str, to: str) -> None:
        """Guard a status change made in SQL (services.py settles a whole order in one UPDATE)."""
        require_transition(cls.TRANSITIONS, what=f"reservation of order {order_id}", current=current, to=to)
