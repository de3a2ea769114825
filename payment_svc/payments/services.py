"""Payment use cases.

Money moves with conditional UPDATEs (``balance = balance - x WHERE balance >= x``):
the row lock PostgreSQL takes for the UPDATE serialises concurrent charges on one
account without a read-modify-write race, so a balance can never go negative and
needs no retry loop. "Never charge twice" is the unique (order, kind) constraint.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.db import IntegrityError, transaction

from common.errors import AlreadyExists
from common.messaging.ids import new_id
from common.messaging.outbox import emit
from common.messaging.sagas import saga_facts, saga_mark_cancelled, saga_step
from common.messaging.statements import statement_cursor
from payment_svc.payments import statements
from payment_svc.payments.models import Account, PaymentKind

log = logging.getLogger(__name__)


class AccountExists(AlreadyExists):
    pass


def account_create(*, customer_id: str, balance: Decimal) -> Account:
    try:
        with transaction.atomic():
            return Account.objects.create(customer_id=customer_id, balance=balance, opening_balance=balance)
    except IntegrityError as exc:
        raise AccountExists(f"Account {customer_id} already exists.") from exc


def accounts_lock(*, customer_ids: list[str], charged_for: list[str]) -> None:
    """Lock the accounts ``customer_ids`` and those that paid for ``charged_for``, in id order.

    For a group-commit batch of several sagas (common/messaging/consumer.py): one handler touches
    one account, but a batch runs several in one transaction, so without this two
    batches could each hold an account the other one needs next.
    """
    with statement_cursor() as cursor:
        statements.accounts_lock.execute(cursor, [customer_ids, charged_for, PaymentKind.CHARGE.value])


def _decline(order_id: str, customer_id: str, money: str, code: str, reason: str) -> None:
    emit(
        event_type="PaymentDeclined",
        saga_id=order_id,
        payload={"customer_id": customer_id, "amount": money, "code": code, "reason": reason},
    )


@saga_step
def payment_charge(
    *, order_id: str, customer_id: str, amount: Decimal, shipping_address: dict[str, Any] | None
) -> None:
    """Charge the order's total once: PaymentCompleted (carrying the shipping address on to
    Shipping) or PaymentDeclined."""
    charged_before, cancelled, known = saga_facts(
        statements.charge_facts, [order_id, PaymentKind.CHARGE.value, order_id, customer_id]
    )
    if charged_before:
        return
    if cancelled:
        log.info("order %s was cancelled before payment: not charging", order_id, extra={"saga_id": order_id})
        return
    money = f"{amount:.2f}"
    if not known:
        _decline(order_id, customer_id, money, "unknown_customer", f"unknown customer {customer_id}")
        return
    payment_id = new_id()
    with statement_cursor() as cursor:
        statements.account_charge.execute(
            cursor, [amount, customer_id, amount, payment_id, order_id, PaymentKind.CHARGE.value, amount]
        )
        charged = cursor.rowcount == 1
    if not charged:
        _decline(
            order_id,
            customer_id,
            money,
            "insufficient_funds",
            f"insufficient funds: customer {customer_id} cannot pay {money}",
        )
        return
    payload = {"customer_id": customer_id, "amount": money, "payment_id": str(payment_id)}
    if shipping_address is not None:  # absent only in an InventoryReserved from before the upgrade
        payload["shipping_address"] = shipping_address
    emit(event_type="PaymentCompleted", saga_id=order_id, payload=payload)


@dataclass(frozen=True)
class Charge:
    customer_id: str
    amount: Decimal


def _refund(order_id: str) -> tuple[Charge | None, bool]:
    """Give the order's charge back if there is one not yet refunded: (the charge, refunded now).

    Plain SQL, three statements at most (every cancelled or failed saga runs it); the
    unique (order_id, kind) constraint still makes a second refund impossible.
    """
    with statement_cursor() as cursor:
        statements.charge_read.execute(
            cursor, [order_id, PaymentKind.REFUND.value, order_id, PaymentKind.CHARGE.value]
        )
        row = cursor.fetchone()
        if row is None:
            return None, False
        charge = Charge(customer_id=row[0], amount=row[1])
        if row[2]:
            return charge, False  # refunded before
        statements.account_credit.execute(cursor, [charge.amount, charge.customer_id])
        statements.payment_insert.execute(
            cursor, [new_id(), order_id, charge.customer_id, PaymentKind.REFUND.value, charge.amount]
        )
    return charge, True


@saga_step
def payment_refund(*, order_id: str) -> None:
    """Compensation: give the order's charge back, once; confirms with PaymentRefunded."""
    charge, refunded = _refund(order_id)
    if refunded:
        emit(
            event_type="PaymentRefunded",
            saga_id=order_id,
            payload={"customer_id": charge.customer_id, "amount": f"{charge.amount:.2f}"},
        )


@saga_step
def payment_cancel(*, order_id: str, reason: str) -> None:
    """The order was cancelled: refuse a late charge, refund a present one, confirm."""
    saga_mark_cancelled(saga_id=order_id, reason=reason)
    charge, refunded = _refund(order_id)
    payload = {"amount": f"{charge.amount:.2f}" if refunded else "0.00"}
    if charge is not None:
        payload["customer_id"] = charge.customer_id
    emit(event_type="PaymentRefunded", saga_id=order_id, payload=payload)
