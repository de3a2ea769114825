"""The SPEC §5 audit: ``./manage.py audit`` (``make audit ARGS="…"``).

Checks, across the four services, what must be true once the system is quiet, and
names every violation (the order, product, account, service or parked message; what
was expected; what was found; what an operator should do):

- ``completed``: a COMPLETED order has a priced total equal to Σ quantity × unit price
  of its lines, exactly one charge of that total to its customer and no refund, every
  line's reservation DEDUCTED (same sku, quantity and unit price), exactly one
  shipment, SCHEDULED.
- ``cancelled``: a CANCELLED or REJECTED order moved no net money (at most one charge,
  refunded by at most one refund), holds and deducted no stock, has no SCHEDULED shipment.
- ``stuck``: a PENDING or COMPENSATING order past its deadline plus ``--grace``.
- ``product``: available ≥ 0, reserved ≥ 0, received = available + reserved + Σ
  DEDUCTED reservations, reserved = Σ RESERVED reservations.
- ``account``: balance ≥ 0, opening balance = balance + Σ charges − Σ refunds, and no
  payment for a customer without an account.
- ``orphan``: a payment, reservation or shipment whose order the order service does
  not know.
- ``outbox``: events committed but still unpublished after ``--outbox-older-than``.
- ``parked``: every message a service parked and no operator replayed or discarded.

Non-terminal orders within their deadline plus the grace are *in flight*, not
violations. SPEC §5 holds once the system is quiet, and by default the audit is
strict. On a busy system a terminal order's last effects (the deduction after
COMPLETED) may still be travelling: with ``--settle SECONDS``, differences on an order
that finished less than that long ago are reported as *settling*, not counted.

How it reads: one read-only connection per service database (never through Django,
so the command needs no settings), each in a REPEATABLE READ transaction: every
query sees one snapshot per database. Payment, inventory and shipping snapshots are
taken before the order one, so whatever those services did for an order, the order
already existed in the order snapshot (no false orphan). Orders are read by keyset
pagination (``id > last ORDER BY id LIMIT batch``); for each batch the lines,
payments, reservations, shipments and parked messages are fetched with ``= ANY`` on
the batch's ids. Stock and money conservation are SQL aggregates; orphans are
streamed the same way (distinct order ids by keyset, looked up in the order
database). Nothing holds more than one batch; violations go to the ``--json`` file
as they are found and only the first ``--max-print`` of each check stay in memory.

Exit status: 0 no violation, 1 any violation, 2 a database could not be reached or read.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, NamedTuple, Protocol, TextIO

import psycopg2
import psycopg2.extensions

from common.services import SERVICES
from common.settings import database_params

TERMINAL = frozenset({"COMPLETED", "CANCELLED", "REJECTED"})
STATUSES = ("PENDING", "COMPENSATING", "COMPLETED", "CANCELLED", "REJECTED")
DEFAULT_BATCH = 2000
PROGRESS_EVERY = 10_000

CHECKS = {
    "completed": "COMPLETED orders: one charge of the total, no refund, stock deducted, one shipment",
    "cancelled": "CANCELLED/REJECTED orders: no net money, no stock held or deducted, no active shipment",
    "stuck": "orders not terminal after their deadline plus the grace",
    "product": "stock: available/reserved >= 0, received = available + reserved + deducted",
    "account": "money: balance >= 0, opening balance = balance + charges - refunds",
    "orphan": "payments, reservations, shipments of an order the order service does not know",
    "outbox": "events committed but not published",
    "parked": "messages a service gave up on, waiting for an operator",
}


# -- rows, as the databases give them ------------------------------------------------
class OrderRow(NamedTuple):
    id: str
    customer_id: str
    status: str
    total: Decimal | None
    deadline_at: datetime
    finished_at: datetime | None
    compensations_expected: list[str]
    compensations_confirmed: list[str]


class Line(NamedTuple):
    sku: str
    quantity: int
    unit_price: Decimal | None


class Money(NamedTuple):
    kind: str  # "charge" | "refund"
    amount: Decimal
    customer_id: str


class Held(NamedTuple):
    """A reservation line."""

    sku: str
    quantity: int
    unit_price: Decimal
    status: str  # RESERVED | RELEASED | DEDUCTED


class ShipmentRow(NamedTuple):
    id: str
    status: str  # SCHEDULED | CANCELLED


class ParkedRef(NamedTuple):
    service: str
    id: int
    event_type: str


class ProductRow(NamedTuple):
    sku: str
    available: int
    reserved: int
    received: int
    held: int  # Σ quantity of RESERVED reservations
    deducted: int  # Σ quantity of DEDUCTED reservations


class AccountRow(NamedTuple):
    customer_id: str
    balance: Decimal
    opening_balance: Decimal
    charges: Decimal
    refunds: Decimal


class UnaccountedRow(NamedTuple):
    """Payments of a customer who has no account."""

    customer_id: str
    payments: int
    charges: Decimal
    refunds: Decimal


class OutboxRow(NamedTuple):
    """Unpublished events of one service older than the threshold, and the oldest of them."""

    count: int
    oldest_age_seconds: float
    oldest_event_type: str
    oldest_saga_id: str
    oldest_attempts: int
    oldest_error: str


class ParkedRow(NamedTuple):
    id: int
    event_type: str
    saga_id: str | None
    reason: str
    parked_at: datetime


class Orphan(NamedTuple):
    service: str  # payment | inventory | shipping
    order_id: str
    rows: Sequence[Money | Held | ShipmentRow]


@dataclass
class OrderFacts:
    """One order and what every service holds for it."""

    order: OrderRow
    lines: list[Line] = field(default_factory=list)
    payments: list[Money] = field(default_factory=list)
    reservations: list[Held] = field(default_factory=list)
    shipments: list[ShipmentRow] = field(default_factory=list)
    parked: list[ParkedRef] = field(default_factory=list)


@dataclass
class Violation:
    check: str
    expected: str
    found: str
    hint: str
    order_id: str | None = None
    sku: str | None = None
    customer_id: str | None = None
    service: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        subject = {
            key: value
            for key, value in (
                ("order_id", self.order_id),
                ("sku", self.sku),
                ("customer_id", self.customer_id),
                ("service", self.service),
            )
            if value is not None
        }
        return {
            "check": self.check,
            **subject,
            **self.extra,
            "expected": self.expected,
            "found": self.found,
            "hint": self.hint,
        }

    @property
    def label(self) -> str:
        if self.check == "parked":
            saga = f"saga {self.extra['saga_id']}" if self.extra.get("saga_id") else "no saga id"
            event_type = self.extra.get("event_type") or "(unreadable)"
            return f"{self.service} parked #{self.extra['id']} {event_type} ({saga})"
        if self.check == "outbox":
            return f"{self.service} outbox"
        if self.order_id and self.service:
            return f"{self.service} records of order {self.order_id}"
        if self.order_id:
            return f"order {self.order_id}"
        if self.sku is not None:
            return f"product {self.sku}"
        return f"account {self.customer_id}"


# -- formatting ----------------------------------------------------------------------
def money(amount: Decimal | None) -> str:
    return "none" if amount is None else f"{amount:.2f}"


def age(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 2 * 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"


def _lines(lines: Iterable[Line]) -> str:
    return ", ".join(f"{line.sku}×{line.quantity}" for line in sorted(lines)) or "no lines"


def _payments(payments: Sequence[Money]) -> str:
    return ", ".join(f"{p.kind} {money(p.amount)} to {p.customer_id}" for p in payments)


def _with_parked(hint: str, facts: OrderFacts) -> str:
    """An order's problem often is a parked message: say which to replay first."""
    if not facts.parked:
        return hint
    replays = "; ".join(
        f"./manage.py {p.service} parked replay {p.id} ({p.event_type or 'unreadable'})" for p in facts.parked
    )
    return (
        f"a message of this saga is parked — replay it first: {replays}; then rerun the audit. Else: {hint}"
    )


def _show(order_id: str) -> str:
    return f"./manage.py order saga show {order_id}"


# -- the checks: pure functions of rows ----------------------------------------------
def order_state(order: OrderRow, *, now: datetime, grace: timedelta, settle: timedelta = timedelta(0)) -> str:
    """``in flight``, ``stuck``, ``settling`` (finished less than ``settle`` ago) or ``final``."""
    if order.status not in TERMINAL:
        return "stuck" if order.deadline_at + grace < now else "in flight"
    if order.finished_at is not None and order.finished_at > now - settle:
        return "settling"
    return "final"


def check_order(facts: OrderFacts, *, now: datetime, grace: timedelta) -> list[Violation]:
    status = facts.order.status
    if status == "COMPLETED":
        return check_completed(facts)
    if status in ("CANCELLED", "REJECTED"):
        return check_cancelled(facts)
    if order_state(facts.order, now=now, grace=grace) == "stuck":
        return [stuck_violation(facts, now=now, grace=grace)]
    return []


def check_completed(facts: OrderFacts) -> list[Violation]:
    order = facts.order
    oid = order.id
    found: list[Violation] = []

    def violation(expected: str, got: str, hint: str) -> None:
        found.append(Violation("completed", expected, got, _with_parked(hint, facts), order_id=oid))

    unpriced = [line.sku for line in facts.lines if line.unit_price is None]
    if order.total is None or unpriced or not facts.lines:
        violation(
            "a priced total and priced lines",
            f"total {money(order.total)}"
            + (f", unpriced lines {', '.join(sorted(unpriced))}" if unpriced else "")
            + ("" if facts.lines else ", no lines"),
            f"the order completed without inventory's pricing: see {_show(oid)}",
        )
    else:
        lines_total = sum((line.quantity * line.unit_price for line in facts.lines), Decimal(0))
        if lines_total != order.total:
            violation(
                f"total {money(lines_total)} (Σ quantity × unit price of {len(facts.lines)} lines)",
                f"total {money(order.total)}",
                f"the order's total disagrees with its lines: see {_show(oid)} and correct it by hand",
            )

    charges = [p for p in facts.payments if p.kind == "charge"]
    refunds = [p for p in facts.payments if p.kind == "refund"]
    if len(charges) != 1 or charges[0].amount != order.total or charges[0].customer_id != order.customer_id:
        violation(
            f"one charge of {money(order.total)} to {order.customer_id}",
            _payments(charges) or "no charge",
            "the customer was not charged what the completed order costs: compare "
            f"{_show(oid)} with GET /api/payments/?order_id={oid} and settle the difference by hand "
            "(the saga will not charge again)",
        )
    if refunds:
        violation(
            "no refund",
            _payments(refunds),
            "a completed order was refunded: the goods ship and the money is back — decide by hand "
            "(charge again or cancel the shipment)",
        )

    wanted = {line.sku: line for line in facts.lines}
    held = {r.sku: r for r in facts.reservations}
    problems: list[str] = []
    not_deducted = False
    for sku, line in sorted(wanted.items()):
        reservation = held.get(sku)
        if reservation is None:
            problems.append(f"{sku}×{line.quantity} not reserved")
        elif reservation.status != "DEDUCTED" or reservation.quantity != line.quantity:
            problems.append(f"{sku}×{reservation.quantity} {reservation.status}")
            not_deducted = not_deducted or reservation.status == "RESERVED"
        elif line.unit_price is not None and reservation.unit_price != line.unit_price:
            problems.append(
                f"{sku} priced {money(reservation.unit_price)} by inventory, "
                f"{money(line.unit_price)} on the order"
            )
    problems += [
        f"{r.sku}×{r.quantity} {r.status} (not a line of the order)"
        for r in held.values()
        if r.sku not in wanted
    ]
    if problems:
        if not_deducted:
            hint = (
                "the deduction did not happen: inventory has not handled OrderCompleted — look for it in "
                f"./manage.py inventory parked list --saga {oid} and in the order outbox"
            )
        else:
            hint = (
                f"stock and order lines disagree: compare {_show(oid)} "
                f"with GET /api/reservations/?order_id={oid}"
            )
        violation(f"deducted: {_lines(facts.lines)}", "; ".join(problems), hint)

    scheduled = [s for s in facts.shipments if s.status == "SCHEDULED"]
    if len(facts.shipments) != 1 or not scheduled:
        violation(
            "one SCHEDULED shipment",
            ", ".join(f"shipment {s.id} {s.status}" for s in facts.shipments) or "no shipment",
            "a completed order has no active shipment: schedule it by hand, or refund and cancel the order",
        )
    return found


def check_cancelled(facts: OrderFacts) -> list[Violation]:
    order = facts.order
    oid = order.id
    found: list[Violation] = []

    def violation(expected: str, got: str, hint: str) -> None:
        found.append(Violation("cancelled", expected, got, _with_parked(hint, facts), order_id=oid))

    charges = [p for p in facts.payments if p.kind == "charge"]
    refunds = [p for p in facts.payments if p.kind == "refund"]
    charged = sum((p.amount for p in charges), Decimal(0))
    refunded = sum((p.amount for p in refunds), Decimal(0))
    if charged != refunded or len(charges) > 1 or len(refunds) > 1:
        violation(
            f"{order.status}: net money zero (each charge refunded once)",
            f"charged {money(charged)} in {len(charges)}, refunded {money(refunded)} in {len(refunds)}"
            + (f" ({_payments(facts.payments)})" if facts.payments else ""),
            "the refund is missing or wrong: look for the compensation in "
            f"./manage.py payment parked list --saga {oid}, else refund by hand",
        )
    held = [r for r in facts.reservations if r.status in ("RESERVED", "DEDUCTED")]
    if held:
        violation(
            f"{order.status}: no stock held or deducted",
            "; ".join(f"{r.sku}×{r.quantity} {r.status}" for r in sorted(held)),
            "stock is still held for an order that did not complete: look for the release in "
            f"./manage.py inventory parked list --saga {oid}, else release it by hand",
        )
    active = [s for s in facts.shipments if s.status == "SCHEDULED"]
    if active:
        violation(
            f"{order.status}: no active shipment",
            ", ".join(f"shipment {s.id} SCHEDULED" for s in active),
            "a shipment is still scheduled for an order that did not complete: look for the cancellation in "
            f"./manage.py shipping parked list --saga {oid}, else cancel the shipment by hand",
        )
    return found


def stuck_violation(facts: OrderFacts, *, now: datetime, grace: timedelta) -> Violation:
    order = facts.order
    waiting = [c for c in order.compensations_expected if c not in set(order.compensations_confirmed)]
    got = f"{order.status} {age((now - order.deadline_at).total_seconds())} after its deadline"
    if order.status == "COMPENSATING" and waiting:
        got += f", waiting for {', '.join(waiting)}"
    return Violation(
        "stuck",
        f"terminal by {(order.deadline_at + grace).isoformat(timespec='seconds')} "
        f"(deadline + {int(grace.total_seconds())}s)",
        got,
        _with_parked(f"stuck: see {_show(order.id)} (the timeline names the step it waits for)", facts),
        order_id=order.id,
    )


def check_product(row: ProductRow) -> list[Violation]:
    found: list[Violation] = []
    if row.available < 0 or row.reserved < 0:
        found.append(
            Violation(
                "product",
                "available >= 0 and reserved >= 0",
                f"available {row.available}, reserved {row.reserved}",
                f"stock of {row.sku} went negative (oversold): stop selling it and reconcile by hand",
                sku=row.sku,
            )
        )
    counted = row.available + row.reserved + row.deducted
    if counted != row.received:
        found.append(
            Violation(
                "product",
                f"available + reserved + deducted = received {row.received}",
                f"{row.available} + {row.reserved} + {row.deducted} = {counted} "
                f"({counted - row.received:+d})",
                f"stock of {row.sku} changed outside the saga (SQL, a bug): count it, then correct "
                "available (or received, for a delivery) by hand",
                sku=row.sku,
            )
        )
    if row.reserved != row.held:
        found.append(
            Violation(
                "product",
                f"reserved {row.reserved} = Σ RESERVED reservations",
                f"Σ RESERVED reservations = {row.held}",
                f"reserved of {row.sku} disagrees with its reservations: release or correct by hand "
                f"(GET /api/reservations/ lists them per order)",
                sku=row.sku,
            )
        )
    return found


def check_account(row: AccountRow) -> list[Violation]:
    found: list[Violation] = []
    if row.balance < 0:
        found.append(
            Violation(
                "account",
                "balance >= 0",
                f"balance {money(row.balance)}",
                f"account {row.customer_id} is overdrawn: a charge went through without funds — "
                "reconcile by hand",
                customer_id=row.customer_id,
            )
        )
    counted = row.balance + row.charges - row.refunds
    if counted != row.opening_balance:
        found.append(
            Violation(
                "account",
                f"balance + charges - refunds = opening balance {money(row.opening_balance)}",
                f"{money(row.balance)} + {money(row.charges)} - {money(row.refunds)} = {money(counted)} "
                f"({counted - row.opening_balance:+.2f})",
                f"money of {row.customer_id} moved outside the saga: compare GET /api/payments/ of the "
                "customer's orders with the balance and correct it by hand",
                customer_id=row.customer_id,
            )
        )
    return found


def unaccounted_violation(row: UnaccountedRow) -> Violation:
    return Violation(
        "account",
        "an account for every customer charged or refunded",
        f"no account, {row.payments} payments (charges {money(row.charges)}, refunds {money(row.refunds)})",
        f"the account of {row.customer_id} was deleted or never existed: restore it (opening balance "
        "included) or refund by hand",
        customer_id=row.customer_id,
    )


def orphan_violation(orphan: Orphan) -> Violation:
    rows = orphan.rows
    if orphan.service == "payment":
        payments = [r for r in rows if isinstance(r, Money)]
        what = _payments(payments)
        net = sum((p.amount if p.kind == "charge" else -p.amount for p in payments), Decimal(0))
        active = net != 0
        undo = "refund the charge by hand"
    elif orphan.service == "inventory":
        held = sorted(r for r in rows if isinstance(r, Held))
        what = "; ".join(f"reservation {r.sku}×{r.quantity} {r.status}" for r in held)
        active = any(r.status in ("RESERVED", "DEDUCTED") for r in held)
        undo = "release the stock by hand"
    else:
        what = ", ".join(f"shipment {r.id} {r.status}" for r in rows if isinstance(r, ShipmentRow))
        active = any(isinstance(r, ShipmentRow) and r.status == "SCHEDULED" for r in rows)
        undo = "cancel the shipment by hand"
    hint = (
        f"{orphan.service} acted for an order that does not exist (deleted, or a foreign event): {undo}"
        if active
        else f"nothing is held, but {orphan.service} records name an order that does not exist: "
        "find out where the order went"
    )
    return Violation(
        "orphan",
        f"order {orphan.order_id} in the order service",
        f"{what}; no such order",
        hint,
        order_id=orphan.order_id,
        service=orphan.service,
    )


def outbox_violation(service: str, row: OutboxRow, *, older_than: float) -> Violation:
    got = (
        f"{row.count} unpublished, oldest {age(row.oldest_age_seconds)} old "
        f"({row.oldest_event_type} of saga {row.oldest_saga_id}, {row.oldest_attempts} publish attempts"
        + (
            f", last error: {row.oldest_error.strip().splitlines()[-1][:200]}"
            if row.oldest_error.strip()
            else ""
        )
        + ")"
    )
    return Violation(
        "outbox",
        f"no event unpublished for more than {older_than:g}s",
        got,
        f'the {service} relay is not publishing: make ctl ARGS="status {service}-relay", its log '
        f'var/log/{service}-relay.log, then make ctl ARGS="restart {service}-relay"; is RabbitMQ up?',
        service=service,
    )


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else f"{text[: limit - 1]}…"


def parked_violation(service: str, row: ParkedRow) -> Violation:
    show = f"./manage.py {service} parked show {row.id}"
    discard = f"./manage.py {service} parked discard {row.id} --note WHY"
    if row.reason.startswith("malformed"):
        # A replay would park it again: the message itself is broken.
        hint = f"malformed, a replay would park it again: inspect it with {show}, then {discard}"
    else:
        hint = (
            f"inspect it with {show}; once its cause is fixed, replay it with "
            f"./manage.py {service} parked replay {row.id} (or give up on it: {discard})"
        )
    return Violation(
        "parked",
        "no message left parked",
        f"PARKED since {row.parked_at.isoformat(timespec='seconds')}: {_short(row.reason)}",
        hint,
        service=service,
        extra={
            "id": row.id,
            "event_type": row.event_type,
            "saga_id": row.saga_id,
            "reason": row.reason,
            "parked_at": row.parked_at.isoformat(),
        },
    )


# -- streaming -----------------------------------------------------------------------
def keyset_batches(
    fetch: Callable[[Any, int], Sequence[Any]], *, size: int, key: Callable[[Any], Any] = lambda row: row[0]
) -> Iterator[Sequence[Any]]:
    """Batches of ``fetch(after, size)`` (rows with a key above ``after``, ``None`` first) until short."""
    after = None
    while True:
        batch = fetch(after, size)
        if batch:
            yield batch
        if len(batch) < size:
            return
        after = key(batch[-1])


class Related(NamedTuple):
    """What the other services hold for a batch of orders, by order id."""

    lines: dict[str, list[Line]]
    payments: dict[str, list[Money]]
    reservations: dict[str, list[Held]]
    shipments: dict[str, list[ShipmentRow]]
    parked: dict[str, list[ParkedRef]]

    def facts(self, order: OrderRow) -> OrderFacts:
        return OrderFacts(
            order=order,
            lines=self.lines.get(order.id, []),
            payments=self.payments.get(order.id, []),
            reservations=self.reservations.get(order.id, []),
            shipments=self.shipments.get(order.id, []),
            parked=self.parked.get(order.id, []),
        )


class Sources(Protocol):
    """Where the audit reads; :class:`PostgresSources` for real, a fake in the unit tests."""

    def now(self) -> datetime: ...
    def order_counts(self) -> dict[str, int]: ...
    def order_batches(self, size: int) -> Iterator[Sequence[OrderRow]]: ...
    def related(self, order_ids: list[str]) -> Related: ...
    def products(self) -> tuple[int, Iterable[ProductRow]]: ...
    def accounts(self) -> tuple[int, Iterable[AccountRow]]: ...
    def unaccounted(self) -> Iterable[UnaccountedRow]: ...
    def orphans(self, size: int, scanned: Counter[str]) -> Iterable[Orphan]: ...
    def outbox(self, older_than: float) -> Iterable[tuple[str, OutboxRow]]: ...
    def parked(self) -> Iterable[tuple[str, ParkedRow]]: ...


# -- the report ----------------------------------------------------------------------
class JsonSink:
    """``{"violations": [...], "settling": [...], "summary": {...}}``, written as it goes.

    Violations stream into a temporary file next to FILE, settling differences into a
    spool; at the end the spool is appended, then the summary, and the file is renamed
    into place (a reader never sees half a report).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        self.tmp = Path(tmp)
        self.file: TextIO = os.fdopen(fd, "w", encoding="utf-8")
        self.spool: TextIO = tempfile.TemporaryFile("w+", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self.file.write('{"violations": [')
        self.written = {False: 0, True: 0}

    def write(self, item: dict[str, Any], *, settling: bool = False) -> None:
        out = self.spool if settling else self.file
        out.write(("\n" if not self.written[settling] else ",\n") + json.dumps(item, ensure_ascii=False))
        self.written[settling] += 1

    def close(self, summary: dict[str, Any]) -> None:
        self.file.write('\n],\n"settling": [')
        self.spool.seek(0)
        while chunk := self.spool.read(1 << 16):
            self.file.write(chunk)
        self.spool.close()
        self.file.write('\n],\n"summary": ' + json.dumps(summary, indent=2) + "}\n")
        self.file.close()
        self.tmp.replace(self.path)

    def abandon(self) -> None:
        self.spool.close()
        self.file.close()
        self.tmp.unlink(missing_ok=True)


@dataclass
class Report:
    max_print: int = 50
    grace_seconds: float = 60.0
    settle_seconds: float = 0.0
    outbox_older_than: float = 30.0
    sink: JsonSink | None = None
    audited_at: datetime | None = None
    order_counts: dict[str, int] = field(default_factory=dict)
    states: Counter[str] = field(default_factory=Counter)
    products_checked: int = 0
    accounts_checked: int = 0
    orphans_scanned: Counter[str] = field(default_factory=Counter)
    counts: Counter[str] = field(default_factory=Counter)
    shown: dict[str, list[Violation]] = field(default_factory=lambda: defaultdict(list))
    settling: int = 0
    settling_shown: list[Violation] = field(default_factory=list)
    duration_seconds: float = 0.0

    def add(self, violation: Violation, *, settling: bool = False) -> None:
        if settling:
            self.settling += 1
            if len(self.settling_shown) < self.max_print:
                self.settling_shown.append(violation)
        else:
            self.counts[violation.check] += 1
            if len(self.shown[violation.check]) < self.max_print:
                self.shown[violation.check].append(violation)
        if self.sink is not None:
            self.sink.write(violation.as_dict(), settling=settling)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def exit_code(self) -> int:
        return 1 if self.total else 0

    def summary(self) -> dict[str, Any]:
        return {
            "ok": not self.total,
            "audited_at": self.audited_at.isoformat() if self.audited_at else None,
            "duration_seconds": round(self.duration_seconds, 3),
            "grace_seconds": self.grace_seconds,
            "settle_seconds": self.settle_seconds,
            "outbox_older_than_seconds": self.outbox_older_than,
            "orders": {
                "total": sum(self.order_counts.values()),
                "by_status": {status: self.order_counts.get(status, 0) for status in STATUSES},
                "in_flight": self.states["in flight"],
                "stuck": self.states["stuck"],
                "settling": self.states["settling"],
            },
            "products_checked": self.products_checked,
            "accounts_checked": self.accounts_checked,
            "orphan_scan_orders": dict(self.orphans_scanned),
            "violation_count": self.total,
            "violations_by_check": {check: self.counts[check] for check in CHECKS},
            "settling_differences": self.settling,
        }

    def render(self) -> str:
        out: list[str] = []
        when = self.audited_at.isoformat(timespec="seconds") if self.audited_at else "?"
        out.append(f"Saga audit (SPEC §5) at {when}, read-only snapshots of {', '.join(SERVICES)}")
        by_status = ", ".join(f"{s} {self.order_counts.get(s, 0)}" for s in STATUSES)
        out.append(f"  orders    {sum(self.order_counts.values())}: {by_status}")
        out.append(
            f"            in flight {self.states['in flight']}, stuck {self.states['stuck']}"
            + (f", settling {self.states['settling']}" if self.settle_seconds else "")
        )
        out.append(f"  products  {self.products_checked} checked")
        out.append(f"  accounts  {self.accounts_checked} checked")
        scanned = ", ".join(f"{svc} {n}" for svc, n in sorted(self.orphans_scanned.items())) or "none"
        out.append(f"  orphans   orders referenced by {scanned} checked against the order service")
        out.append(
            f"  outbox    unpublished events older than {self.outbox_older_than:g}s: "
            f"{self.counts['outbox']} service(s) with some"
        )
        out.append(f"  parked    {self.counts['parked']} message(s) waiting for an operator")
        out.append("")
        for check, description in CHECKS.items():
            count = self.counts[check]
            if not count:
                continue
            out.append(f"{check}: {count} violation(s) — {description}")
            out += self._lines(self.shown[check], count)
            out.append("")
        if self.settling:
            out.append(
                f"settling: {self.settling} difference(s) on orders finished in the last "
                f"{self.settle_seconds:g}s "
                "(not counted: their last effects may still be in flight — rerun the audit)"
            )
            out += self._lines(self.settling_shown, self.settling)
            out.append("")
        if self.total:
            checks = ", ".join(f"{check} {self.counts[check]}" for check in CHECKS if self.counts[check])
            out.append(f"FAILED: {self.total} violation(s) ({checks})")
        else:
            out.append("OK: no violation")
        return "\n".join(out) + "\n"

    def _lines(self, shown: list[Violation], count: int) -> list[str]:
        out = []
        for violation in shown:
            out.append(f"  - {violation.label}: expected {violation.expected}; found {violation.found}")
            out.append(f"      → {violation.hint}")
        if count > len(shown):
            out.append(f"  … and {count - len(shown)} more (all of them: --json FILE)")
        return out


# -- the audit -----------------------------------------------------------------------
def audit(
    sources: Sources,
    report: Report,
    *,
    grace: timedelta,
    settle: timedelta = timedelta(0),
    outbox_older_than: float,
    batch_size: int = DEFAULT_BATCH,
    progress: Callable[[int, int], None] | None = None,
) -> Report:
    started = time.monotonic()
    now = sources.now()
    report.audited_at = now
    report.order_counts = sources.order_counts()
    total = sum(report.order_counts.values())
    done = 0
    for batch in sources.order_batches(batch_size):
        related = sources.related([order.id for order in batch])
        for order in batch:
            state = order_state(order, now=now, grace=grace, settle=settle)
            report.states[state] += 1
            for violation in check_order(related.facts(order), now=now, grace=grace):
                report.add(violation, settling=state == "settling")
        before, done = done, done + len(batch)
        if progress is not None and done // PROGRESS_EVERY > before // PROGRESS_EVERY:
            progress(done, total)
    report.products_checked, products = sources.products()
    for product in products:
        for violation in check_product(product):
            report.add(violation)
    report.accounts_checked, accounts = sources.accounts()
    for account in accounts:
        for violation in check_account(account):
            report.add(violation)
    for row in sources.unaccounted():
        report.add(unaccounted_violation(row))
    for orphan in sources.orphans(batch_size, report.orphans_scanned):
        report.add(orphan_violation(orphan))
    for service, row in sources.outbox(outbox_older_than):
        report.add(outbox_violation(service, row, older_than=outbox_older_than))
    for service, row in sources.parked():
        report.add(parked_violation(service, row))
    report.duration_seconds = time.monotonic() - started
    return report


# -- PostgreSQL ----------------------------------------------------------------------
class DatabaseUnavailable(RuntimeError):
    """A service database could not be reached or read; the message names it."""


class Database:
    """One service database: read-only, one REPEATABLE READ snapshot for the whole audit."""

    def __init__(self, service: str) -> None:
        self.service = service
        self.params = database_params(service)
        try:
            self.conn = psycopg2.connect(
                **self.params,
                connect_timeout=5,
                application_name="saga-audit",
                options="-c default_transaction_read_only=on -c statement_timeout=0",
            )
            self.conn.set_session(
                isolation_level=psycopg2.extensions.ISOLATION_LEVEL_REPEATABLE_READ, readonly=True
            )
        except psycopg2.Error as exc:
            raise DatabaseUnavailable(f"cannot reach {self.where}: {str(exc).strip()}") from exc
        self.named = 0

    @property
    def where(self) -> str:
        p = self.params
        return f"the {self.service} database ({p['dbname']} at {p['host']}:{p['port']} as {p['user']})"

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        try:
            with self.conn.cursor() as cursor:
                cursor.execute(sql, params)
                return cursor.fetchall()
        except psycopg2.Error as exc:
            raise DatabaseUnavailable(f"cannot read {self.where}: {str(exc).strip()}") from exc

    def stream(self, sql: str, params: Sequence[Any] = ()) -> Iterator[tuple[Any, ...]]:
        """Rows through a server-side cursor, a batch at a time."""
        self.named += 1
        try:
            with self.conn.cursor(name=f"audit_{self.named}") as cursor:
                cursor.itersize = DEFAULT_BATCH
                cursor.execute(sql, params)
                yield from cursor
        except psycopg2.Error as exc:
            raise DatabaseUnavailable(f"cannot read {self.where}: {str(exc).strip()}") from exc

    def close(self) -> None:
        try:
            self.conn.rollback()
        finally:
            self.conn.close()


def _grouped(rows: Iterable[tuple[Any, ...]], make: Callable[..., Any]) -> dict[str, list[Any]]:
    grouped: dict[str, list[Any]] = defaultdict(list)
    for order_id, *rest in rows:
        grouped[order_id].append(make(*rest))
    return grouped


ORPHAN_TABLES = {
    "payment": ("payments_payment", "SELECT order_id::text, kind, amount, customer_id", Money),
    "inventory": (
        "inventory_reservation",
        "SELECT order_id::text, product_id, quantity, unit_price, status",
        Held,
    ),
    "shipping": ("shipping_shipment", "SELECT order_id::text, id::text, status", ShipmentRow),
}


class PostgresSources:
    def __init__(self) -> None:
        self.dbs: dict[str, Database] = {}
        try:
            for service in SERVICES:
                self.dbs[service] = Database(service)
            # The order snapshot last: all the others did for an order, it already existed then.
            for service in ("payment", "inventory", "shipping", "order"):
                (now,) = self.dbs[service].rows("SELECT now()")[0]
        except DatabaseUnavailable:
            self.close()
            raise
        self._now: datetime = now

    def close(self) -> None:
        for db in self.dbs.values():
            try:
                db.close()
            except Exception:  # noqa: BLE001 - closing after a failure must not hide it
                continue

    def now(self) -> datetime:
        return self._now

    def order_counts(self) -> dict[str, int]:
        return dict(self.dbs["order"].rows("SELECT status, count(*) FROM orders_order GROUP BY status"))

    def order_batches(self, size: int) -> Iterator[list[OrderRow]]:
        # ORDER BY o.id, the uuid: a bare "id" would be the text output column, which the
        # primary key index cannot serve (a sort of the whole table per batch).
        # The compensations (JSON) matter only while COMPENSATING: not decoded for the others.
        columns = (
            "SELECT o.id::text, o.customer_id, o.status, o.total, o.deadline_at, o.finished_at, "
            "CASE WHEN o.status = 'COMPENSATING' THEN o.compensations_expected END, "
            "CASE WHEN o.status = 'COMPENSATING' THEN o.compensations_confirmed END "
            "FROM orders_order o"
        )

        def fetch(after: str | None, limit: int) -> list[OrderRow]:
            if after is None:
                rows = self.dbs["order"].rows(f"{columns} ORDER BY o.id LIMIT %s", [limit])
            else:
                rows = self.dbs["order"].rows(
                    f"{columns} WHERE o.id > %s::uuid ORDER BY o.id LIMIT %s", [after, limit]
                )
            return [OrderRow(*row[:6], row[6] or [], row[7] or []) for row in rows]

        return keyset_batches(fetch, size=size, key=lambda order: order.id)

    def related(self, order_ids: list[str]) -> Related:
        ids = [order_ids]
        parked: dict[str, list[ParkedRef]] = defaultdict(list)
        for service, db in self.dbs.items():
            for saga_id, message_id, event_type in db.rows(
                "SELECT saga_id::text, id, event_type FROM messaging_parked "
                "WHERE status = 'PARKED' AND saga_id = ANY(%s::uuid[]) ORDER BY id",
                ids,
            ):
                parked[saga_id].append(ParkedRef(service, message_id, event_type))
        return Related(
            lines=_grouped(
                self.dbs["order"].rows(
                    "SELECT order_id::text, sku, quantity, unit_price FROM orders_orderline "
                    "WHERE order_id = ANY(%s::uuid[])",
                    ids,
                ),
                Line,
            ),
            payments=_grouped(
                self.dbs["payment"].rows(
                    "SELECT order_id::text, kind, amount, customer_id FROM payments_payment "
                    "WHERE order_id = ANY(%s::uuid[]) ORDER BY created_at",
                    ids,
                ),
                Money,
            ),
            reservations=_grouped(
                self.dbs["inventory"].rows(
                    "SELECT order_id::text, product_id, quantity, unit_price, status "
                    "FROM inventory_reservation WHERE order_id = ANY(%s::uuid[])",
                    ids,
                ),
                Held,
            ),
            shipments=_grouped(
                self.dbs["shipping"].rows(
                    "SELECT order_id::text, id::text, status FROM shipping_shipment "
                    "WHERE order_id = ANY(%s::uuid[])",
                    ids,
                ),
                ShipmentRow,
            ),
            parked=parked,
        )

    def products(self) -> tuple[int, Iterable[ProductRow]]:
        db = self.dbs["inventory"]
        (count,) = db.rows("SELECT count(*) FROM inventory_product")[0]
        rows = db.stream(
            """
            SELECT * FROM (
                SELECT p.sku, p.available, p.reserved, p.received,
                       COALESCE(r.held, 0) AS held, COALESCE(r.deducted, 0) AS deducted
                FROM inventory_product p
                LEFT JOIN (
                    SELECT product_id,
                           SUM(quantity) FILTER (WHERE status = 'RESERVED') AS held,
                           SUM(quantity) FILTER (WHERE status = 'DEDUCTED') AS deducted
                    FROM inventory_reservation GROUP BY product_id
                ) r ON r.product_id = p.sku
            ) stock
            WHERE available < 0 OR reserved < 0 OR reserved <> held
               OR received <> available + reserved + deducted
            ORDER BY sku
            """
        )
        return count, (ProductRow(*row) for row in rows)

    def accounts(self) -> tuple[int, Iterable[AccountRow]]:
        db = self.dbs["payment"]
        (count,) = db.rows("SELECT count(*) FROM payments_account")[0]
        rows = db.stream(
            """
            SELECT * FROM (
                SELECT a.customer_id, a.balance, a.opening_balance,
                       COALESCE(p.charges, 0) AS charges, COALESCE(p.refunds, 0) AS refunds
                FROM payments_account a
                LEFT JOIN (
                    SELECT customer_id,
                           SUM(amount) FILTER (WHERE kind = 'charge') AS charges,
                           SUM(amount) FILTER (WHERE kind = 'refund') AS refunds
                    FROM payments_payment GROUP BY customer_id
                ) p ON p.customer_id = a.customer_id
            ) money
            WHERE balance < 0 OR opening_balance <> balance + charges - refunds
            ORDER BY customer_id
            """
        )
        return count, (AccountRow(*row) for row in rows)

    def unaccounted(self) -> Iterable[UnaccountedRow]:
        rows = self.dbs["payment"].stream(
            """
            SELECT customer_id, count(*),
                   COALESCE(SUM(amount) FILTER (WHERE kind = 'charge'), 0),
                   COALESCE(SUM(amount) FILTER (WHERE kind = 'refund'), 0)
            FROM payments_payment p
            WHERE NOT EXISTS (SELECT 1 FROM payments_account a WHERE a.customer_id = p.customer_id)
            GROUP BY customer_id ORDER BY customer_id
            """
        )
        return (UnaccountedRow(*row) for row in rows)

    def orphans(self, size: int, scanned: Counter[str]) -> Iterator[Orphan]:
        orders = self.dbs["order"]
        for service, (table, columns, make) in ORPHAN_TABLES.items():
            db = self.dbs[service]

            def fetch(
                after: str | None, limit: int, db: Database = db, table: str = table
            ) -> list[tuple[str]]:
                where = "" if after is None else "WHERE t.order_id > %s::uuid"
                params = [limit] if after is None else [after, limit]
                return db.rows(
                    f"SELECT t.order_id::text FROM {table} t {where} "
                    "GROUP BY t.order_id ORDER BY t.order_id LIMIT %s",
                    params,
                )

            for batch in keyset_batches(fetch, size=size):
                ids = [order_id for (order_id,) in batch]
                scanned[service] += len(ids)
                known = {
                    oid
                    for (oid,) in orders.rows(
                        "SELECT id::text FROM orders_order WHERE id = ANY(%s::uuid[])", [ids]
                    )
                }
                missing = [oid for oid in ids if oid not in known]
                if not missing:
                    continue
                rows = _grouped(
                    db.rows(f"{columns} FROM {table} WHERE order_id = ANY(%s::uuid[])", [missing]), make
                )
                for order_id in missing:
                    yield Orphan(service, order_id, rows.get(order_id, []))

    def outbox(self, older_than: float) -> Iterator[tuple[str, OutboxRow]]:
        for service, db in self.dbs.items():
            count, oldest_age = db.rows(
                "SELECT count(*), EXTRACT(EPOCH FROM now() - min(created_at)) FROM messaging_outbox "
                "WHERE published_at IS NULL AND created_at < now() - make_interval(secs => %s)",
                [older_than],
            )[0]
            if not count:
                continue
            event_type, saga_id, attempts, error = db.rows(
                "SELECT event_type, saga_id::text, publish_attempts, last_error FROM messaging_outbox "
                "WHERE published_at IS NULL ORDER BY created_at, id LIMIT 1"
            )[0]
            yield service, OutboxRow(count, float(oldest_age), event_type, saga_id, attempts, error)

    def parked(self) -> Iterator[tuple[str, ParkedRow]]:
        for service, db in self.dbs.items():
            for row in db.stream(
                "SELECT id, event_type, saga_id::text, reason, parked_at FROM messaging_parked "
                "WHERE status = 'PARKED' ORDER BY id"
            ):
                yield service, ParkedRow(*row)


# -- the command ---------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="./manage.py audit",
        description="Check SPEC §5 across the four services (read-only) and name every violation. "
        "Exit 0: none; 1: some; 2: a database could not be reached.",
    )
    parser.add_argument(
        "--grace",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="retry budget after an order's deadline before it counts as stuck (default 60)",
    )
    parser.add_argument(
        "--settle",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="on a busy system: differences on orders finished less than this ago are reported as "
        "settling, not counted (default 0: strict, for a quiet system)",
    )
    parser.add_argument(
        "--outbox-older-than",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="an unpublished outbox row older than this is a violation (default 30)",
    )
    parser.add_argument(
        "--max-print", type=int, default=50, metavar="N", help="violations printed per check (default 50)"
    )
    parser.add_argument(
        "--json", type=Path, metavar="FILE", help="write the full report (every violation) here"
    )
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH, metavar="N", help=argparse.SUPPRESS)
    return parser


def _progress(done: int, total: int) -> None:
    sys.stderr.write(f"audit: {done}/{total} orders checked\n")
    sys.stderr.flush()


def main(argv: list[str]) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if min(args.grace, args.settle, args.outbox_older_than, args.max_print) < 0 or args.batch_size < 1:
        parser.error("--grace, --settle, --outbox-older-than and --max-print must be >= 0")
    try:
        sink = JsonSink(args.json) if args.json else None
    except OSError as exc:
        parser.error(f"cannot write --json {args.json}: {exc.strerror}")
    report = Report(
        max_print=args.max_print,
        grace_seconds=args.grace,
        settle_seconds=args.settle,
        outbox_older_than=args.outbox_older_than,
        sink=sink,
    )
    try:
        sources = PostgresSources()
        try:
            audit(
                sources,
                report,
                grace=timedelta(seconds=args.grace),
                settle=timedelta(seconds=args.settle),
                outbox_older_than=args.outbox_older_than,
                batch_size=args.batch_size,
                progress=_progress,
            )
        finally:
            sources.close()
    except DatabaseUnavailable as exc:
        if sink is not None:
            sink.abandon()
        sys.stderr.write(f"audit: {exc}\n")
        return 2
    except BaseException:
        if sink is not None:
            sink.abandon()
        raise
    if sink is not None:
        sink.close(report.summary())
    sys.stdout.write(report.render())
    if sink is not None:
        sys.stdout.write(f"full report: {args.json}\n")
    return report.exit_code
