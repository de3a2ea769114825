"""Payment use cases.

Money moves with conditional UPDATEs (``balance = balance - x WHERE balance >= x``):
the row lock PostgreSQL takes for the UPDATE serialises concurrent charges on one
account without a read-modify-write race, so a balance can never go negative and
needs no retry loop. "Never charge twice" is the unique (order, kind) constraint.
"""

from __future__ import annotations

from decimal import Decimal

from django.db import IntegrityError, transaction
from django.db.models import F

from common.errors import AlreadyExists
from common.outbox import emit
from payment_svc.payments.models import Account, Payment, PaymentKind


class AccountExists(AlreadyExists):
    pass


def account_create(*, customer_id: str, balance: Decimal) -> Account:
    try:
        with transaction.atomic():
            return Account.objects.create(customer_id=customer_id, balance=balance, opening_balance=balance)
    except IntegrityError as exc:
        raise AccountExists(f"Account {customer_id} already exists.") from exc


def payment_charge(*, order_id: str, customer_id: str, amount: Decimal) -> None:
    """Charge the order's total once: PaymentCompleted or PaymentDeclined."""
    if Payment.objects.filter(order_id=order_id, kind=PaymentKind.CHARGE).exists():
        return
    money = f"{amount:.2f}"
    if not Account.objects.filter(customer_id=customer_id).exists():
        emit(
            event_type="PaymentDeclined",
            saga_id=order_id,
            payload={
                "customer_id": customer_id,
                "amount": money,
                "code": "unknown_customer",
                "reason": f"unknown customer {customer_id}",
            },
        )
        return
    charged = Account.objects.filter(customer_id=customer_id, balance__gte=amount).update(
        balance=F("balance") - amount
    )
    if not charged:
        emit(
            event_type="PaymentDeclined",
            saga_id=order_id,
            payload={
                "customer_id": customer_id,
                "amount": money,
                "code": "insufficient_funds",
                "reason": f"insufficient funds: customer {customer_id} cannot pay {money}",
            },
        )
        return
    Payment.objects.create(order_id=order_id, customer_id=customer_id, kind=PaymentKind.CHARGE, amount=amount)
    emit(
        event_type="PaymentCompleted", saga_id=order_id, payload={"customer_id": customer_id, "amount": money}
    )


def payment_refund(*, order_id: str) -> None:
    """Compensation: give the order's charge back, once; confirms with PaymentRefunded."""
    charge = Payment.objects.filter(order_id=order_id, kind=PaymentKind.CHARGE).first()
    if charge is None:
        return
    if Payment.objects.filter(order_id=order_id, kind=PaymentKind.REFUND).exists():
        return
    Account.objects.filter(customer_id=charge.customer_id).update(balance=F("balance") + charge.amount)
    Payment.objects.create(
        order_id=order_id, customer_id=charge.customer_id, kind=PaymentKind.REFUND, amount=charge.amount
    )
    emit(
        event_type="PaymentRefunded",
        saga_id=order_id,
        payload={"customer_id": charge.customer_id, "amount": f"{charge.amount:.2f}"},
    )
