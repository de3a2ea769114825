from __future__ import annotations

from django.db import models
from django.utils import timezone

from common.errors import require_transition
from common.messaging.ids import new_id


class ShipmentStatus(models.TextChoices):
    SCHEDULED = "SCHEDULED"
    CANCELLED = "CANCELLED"


class Destination(models.Model):
    """Where an order goes, learnt from OrderPlaced (each service keeps what it needs)."""

    order_id = models.UUIDField(primary_key=True)
    country = models.CharField(max_length=2)
    address = models.JSONField(default=dict)
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"{self.order_id} → {self.country}"


class Shipment(models.Model):
    """The order's one shipment: SCHEDULED, then CANCELLED if the order is cancelled (final)."""

    TRANSITIONS = {ShipmentStatus.SCHEDULED: frozenset({ShipmentStatus.CANCELLED})}

    id = models.UUIDField(primary_key=True, default=new_id, editable=False)
    order_id = models.UUIDField(unique=True)
    status = models.CharField(max_length=16, choices=ShipmentStatus.choices, default=ShipmentStatus.SCHEDULED)
    country = models.CharField(max_length=2)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["created_at"]

    def __str__(self) -> str:
        return f"shipment {self.id} for {self.order_id} ({self.status})"

    @classmethod
    def require(cls, *, order_id: str, current: str, to: str) -> None:
        """Guard a status change made in SQL (services.py reads and updates the row by id)."""
        require_transition(cls.TRANSITIONS, what=f"shipment of order {order_id}", current=current, to=to)
