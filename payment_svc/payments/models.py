from __future__ import annotations

from django.db import models
from django.utils import timezone

from common.messaging.ids import new_id


class PaymentKind(models.TextChoices):
    CHARGE = "charge"
    REFUND = "refund"


class Account(models.Model):
    """A customer's balance. Conservation: ``opening_balance = balance + Σ charges − Σ refunds``."""

    customer_id = models.CharField(max_length=64, primary_key=True)
    balance = models.DecimalField(max_digits=14, decimal_places=2)
    opening_balance = models.DecimalField(max_digits=14, decimal_places=2)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["customer_id"]
        constraints = [
            models.CheckConstraint(condition=models.Q(balance__gte=0), name="account_balance_gte_0")
        ]

    def __str__(self) -> str:
        return f"{self.customer_id} ({self.balance})"


class Payment(models.Model):
    """A money movement. At most one charge and one refund per order (a constraint, not a hope)."""

    id = models.UUIDField(primary_key=True, default=new_id, editable=False)
    order_id = models.UUIDField(db_index=True)
    customer_id = models.CharField(max_length=64, db_index=True)
    kind = models.CharField(max_length=8, choices=PaymentKind.choices)
    amount = models.DecimalField(max_digits=14, decimal_places=2)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["created_at"]
        constraints = [
            models.UniqueConstraint(fields=["order_id", "kind"], name="payment_one_per_kind"),
            models.CheckConstraint(condition=models.Q(amount__gt=0), name="payment_amount_gt_0"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.amount} for {self.order_id}"
