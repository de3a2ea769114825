from __future__ import annotations

from django.db.models import QuerySet

from payment_svc.payments.models import Account, Payment


def account_get(*, customer_id: str) -> Account | None:
    return Account.objects.filter(customer_id=customer_id).first()


def account_list() -> QuerySet[Account]:
    return Account.objects.order_by("customer_id")


def payment_list(*, order_id: str | None = None, customer_id: str | None = None) -> QuerySet[Payment]:
    payments = Payment.objects.order_by("created_at", "id")
    if order_id:
        payments = payments.filter(order_id=order_id)
    if customer_id:
        payments = payments.filter(customer_id=customer_id)
    return payments
