"""Inventory use cases. Stock changes are version-checked conditional UPDATEs.

Every multi-product change touches products in sku order, so two transactions
never wait on each other in opposite orders (no deadlock); a version conflict
rolls back to a savepoint (releasing its row locks), waits a jittered, growing
delay and re-reads, at most ``SAGA_OCC_MAX_ATTEMPTS`` times, then raises so the
message goes to the retry tiers (no livelock, never a lock held while waiting).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, TypeVar

from django.conf import settings
from django.db import IntegrityError, transaction

from common.errors import AlreadyExists
from common.messaging.groupcommit import batching
from common.messaging.ids import new_id
from common.messaging.outbox import emit
from common.messaging.sagas import saga_facts, saga_mark_cancelled, saga_step
from common.messaging.statements import statement_cursor
from common.observability import metrics
from inventory_svc.inventory import statements
from inventory_svc.inventory.models import Product, Reservation, ReservationStatus

log = logging.getLogger(__name__)
T = TypeVar("T")


class VersionConflict(Exception):
    """A product changed between our read and our version-checked update."""


class OccRetriesExhausted(Exception):
    """Too many version conflicts in a row; the message goes to the retry tiers."""


class ProductExists(AlreadyExists):
    pass


def _listing(items: list[str], limit: int = 10) -> str:
    """``a, b, c`` — at most ``limit`` names, then how many more (reasons stay short)."""
    shown = ", ".join(items[:limit])
    return shown if len(items) <= limit else f"{shown} and {len(items) - limit} more"


def _with_occ(action: Callable[[], T], *, what: str) -> T:
    """Run ``action`` in a savepoint, again after a version conflict (bounded, jittered).

    In a group-commit batch the products are already locked (``products_lock``, taken
    when the batch holds several sagas; one saga's handlers all touch the same products),
    so nothing can move a version under us and the savepoint's two round trips buy
    nothing: ``action`` runs as it is. Should a conflict happen there anyway, the batch
    fails and each delivery is handled again on its own, here, with savepoints.
    """
    if batching():
        return action()
    attempts = settings.SAGA_OCC_MAX_ATTEMPTS
    for attempt in range(attempts):
        try:
            with transaction.atomic():
                return action()
        except VersionConflict:
            metrics.OCC_CONFLICTS.labels("inventory", "product").inc()
            time.sleep(random.uniform(0, min(0.002 * 2**attempt, 0.1)))  # noqa: S311
    metrics.OCC_EXHAUSTED.labels("inventory", "product").inc()
    raise OccRetriesExhausted(f"{what}: {attempts} version conflicts in a row")


@dataclass(frozen=True)
class Stock:
    """What a stock change needs to know of a product (a row read in plain SQL)."""

    sku: str
    available: int
    price: Decimal
    version: int


# The largest amount a saga's money fields hold (12 digits and cents: the contracts'
# money pattern, the order's and the payment's columns).
MAX_TOTAL = Decimal("999999999999.99")


def _apply(changes: list[tuple[Stock | Product, int, int]]) -> None:
    """Add ``(product, available, reserved)`` to each product, one UPDATE for them all, each
    ``WHERE version = v``: the optimistic check; VersionConflict if any version moved on.

    Plain SQL, one statement: this runs for every order, and one UPDATE per line (or the
    ORM's query compilation) cost more than the change itself (profiled under ``make bench``).
    """
    if not changes:
        return
    with statement_cursor() as cursor:
        statements.products_apply.execute(
            cursor,
            [
                [product.sku for product, _, _ in changes],
                [available for _, available, _ in changes],
                [reserved for _, _, reserved in changes],
                [product.version for product, _, _ in changes],
            ],
        )
        if cursor.rowcount != len(changes):
            raise VersionConflict(", ".join(product.sku for product, _, _ in changes))


def products_lock(*, skus: list[str], reserved_by: list[str]) -> None:
    """Lock the products ``skus`` and those reserved by the orders ``reserved_by``, in sku order.

    For a group-commit batch of several sagas (common/messaging/consumer.py): each handler touches
    its products in sku order, but a batch runs several handlers in one transaction, so
    without this two batches could hold products the other one needs next. Taken before
    any handler runs, every product lock of the batch follows the one global order.
    ``FOR NO KEY UPDATE`` is what the handlers' UPDATEs take anyway.
    """
    with statement_cursor() as cursor:
        statements.products_lock.execute(cursor, [skus, reserved_by])


def product_create(*, sku: str, name: str, price: Decimal, available: int) -> Product:
    try:
        with transaction.atomic():
            return Product.objects.create(
                sku=sku, name=name, price=price, available=available, received=available
            )
    except IntegrityError as exc:
        raise ProductExists(f"Product {sku} already exists.") from exc


@saga_step
def inventory_reserve(
    *, order_id: str, customer_id: str, items: list[dict[str, Any]], shipping_address: dict[str, Any]
) -> None:
    """Reserve every line or none: InventoryReserved (priced) or InventoryRejected.

    InventoryReserved carries the order's shipping address on to Payment, whose
    PaymentCompleted carries it to Shipping (SPEC §2: the destination travels with the
    saga's events; Shipping no longer needs a delivery of OrderPlaced).
    """
    reserved, cancelled = saga_facts(statements.reserve_facts, [order_id, order_id])
    if reserved:
        log.info("order %s already has reservations; nothing to do", order_id)
        return
    if cancelled:
        log.info(
            "order %s was cancelled before it reached inventory: not reserving",
            order_id,
            extra={"saga_id": order_id},
        )
        return
    wanted = {item["sku"]: int(item["quantity"]) for item in items}

    def attempt() -> tuple[str, dict[str, Any]]:
        with statement_cursor() as cursor:
            statements.products_read.execute(cursor, [list(wanted)])
            products = {row[0]: Stock(*row) for row in cursor.fetchall()}
        unknown = sorted(set(wanted) - set(products))
        if unknown:
            return "InventoryRejected", {
                "code": "unknown_sku",
                "skus": unknown,
                "reason": f"unknown sku: {_listing(unknown)}",
            }
        short = [sku for sku in sorted(wanted) if products[sku].available < wanted[sku]]
        if short:
            detail = _listing(
                [f"{sku} (wanted {wanted[sku]}, available {products[sku].available})" for sku in short]
            )
            return "InventoryRejected", {
                "code": "out_of_stock",
                "skus": short,
                "reason": f"out of stock: {detail}",
            }
        total = sum(products[sku].price * wanted[sku] for sku in wanted)
        if total > MAX_TOTAL:
            # Each price and quantity is within the API's limits, but their sum is more than
            # any money field of the saga holds: nothing can charge it. A business outcome
            # (the order is rejected), not a failure to retry and park.
            return "InventoryRejected", {
                "code": "total_too_large",
                "skus": sorted(wanted),
                "reason": f"the order's total {total:.2f} exceeds {MAX_TOTAL}",
            }
        _apply([(products[sku], -wanted[sku], wanted[sku]) for sku in sorted(wanted)])
        lines = [
            {"sku": sku, "quantity": wanted[sku], "unit_price": f"{products[sku].price:.2f}"}
            for sku in sorted(wanted)
        ]
        _reservations_insert(order_id, [(sku, wanted[sku], products[sku].price) for sku in sorted(wanted)])
        return "InventoryReserved", {
            "customer_id": customer_id,
            "total": f"{total:.2f}",
            "lines": lines,
            "shipping_address": shipping_address,
        }

    event_type, payload = _with_occ(attempt, what=f"reserve order {order_id}")
    emit(event_type=event_type, saga_id=order_id, payload=payload)


def _reservations_insert(order_id: str, lines: list[tuple[str, int, Decimal]]) -> None:
    """The order's reservation lines, one INSERT."""
    with statement_cursor() as cursor:
        statements.reservations_insert.execute(
            cursor,
            [
                order_id,
                ReservationStatus.RESERVED.value,
                [new_id() for _ in lines],
                [sku for sku, _, _ in lines],
                [quantity for _, quantity, _ in lines],
                [price for _, _, price in lines],
            ],
        )


def _settle(*, order_id: str, to: str) -> list[dict[str, Any]]:
    """Move the order's RESERVED lines to RELEASED or DEDUCTED, in sku order; return them."""

    def attempt() -> list[dict[str, Any]]:
        with statement_cursor() as cursor:
            statements.reservations_read.execute(cursor, [order_id, ReservationStatus.RESERVED.value])
            reservations = [(row[0], row[1], Stock(*row[2:])) for row in cursor.fetchall()]
        if reservations:  # the lines read are RESERVED: the guard says where they may go
            Reservation.require(order_id=order_id, current=ReservationStatus.RESERVED, to=to)
        released = to == ReservationStatus.RELEASED
        _apply([(product, quantity if released else 0, -quantity) for _, quantity, product in reservations])
        if reservations:  # one UPDATE for all of them
            with statement_cursor() as cursor:
                statements.reservations_settle.execute(
                    cursor, [str(to), [reservation_id for reservation_id, _, _ in reservations]]
                )
        return [{"sku": product.sku, "quantity": quantity} for _, quantity, product in reservations]

    return _with_occ(attempt, what=f"{to.lower()} order {order_id}")


@saga_step
def inventory_release(*, order_id: str) -> None:
    """Compensation: give reserved stock back, once; confirms with InventoryReleased."""
    lines = _settle(order_id=order_id, to=ReservationStatus.RELEASED)
    if lines or not saga_facts(statements.has_reservations, [order_id])[0]:
        emit(event_type="InventoryReleased", saga_id=order_id, payload={"lines": lines})


@saga_step
def inventory_cancel(*, order_id: str, reason: str) -> None:
    """The order was cancelled: refuse a late reservation, release a present one, confirm."""
    saga_mark_cancelled(saga_id=order_id, reason=reason)
    lines = _settle(order_id=order_id, to=ReservationStatus.RELEASED)
    emit(event_type="InventoryReleased", saga_id=order_id, payload={"lines": lines})


@saga_step
def inventory_deduct(*, order_id: str) -> None:
    """The order completed: reserved stock leaves the warehouse."""
    lines = _settle(order_id=order_id, to=ReservationStatus.DEDUCTED)
    if lines:
        emit(event_type="InventoryDeducted", saga_id=order_id, payload={"lines": lines})
