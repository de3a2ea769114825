"""The SPEC §5 audit (tools/audit.py) without a database.

The checks are pure functions of rows: each test hands them the rows of one order (or
product, account, service) as the databases would, and asserts the violations and
what they tell the operator. ``audit()`` then runs over in-memory sources: clean,
broken, capped printing, the JSON file, and orders streamed in bounded memory.
"""

from __future__ import annotations

import json
import tracemalloc
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from tools import audit as audit_mod
from tools.audit import (
    AccountRow,
    Held,
    JsonSink,
    Line,
    Money,
    OrderFacts,
    OrderRow,
    Orphan,
    OutboxRow,
    ParkedRef,
    ParkedRow,
    ProductRow,
    Related,
    Report,
    ShipmentRow,
    UnaccountedRow,
    Violation,
    audit,
    check_account,
    check_order,
    check_product,
    keyset_batches,
    order_state,
    orphan_violation,
    outbox_violation,
    parked_violation,
)

NOW = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
GRACE = timedelta(seconds=60)
D = Decimal


def order_row(status: str = "COMPLETED", **changes: object) -> OrderRow:
    finished = None if status in ("PENDING", "COMPENSATING") else NOW - timedelta(minutes=5)
    row = OrderRow(
        id=str(uuid.uuid4()),
        customer_id="cust-1",
        status=status,
        total=D("12.50"),
        deadline_at=NOW - timedelta(minutes=4),
        finished_at=finished,
        compensations_expected=[],
        compensations_confirmed=[],
    )
    return row._replace(**changes)


def completed(**changes: object) -> OrderFacts:
    """A COMPLETED order as SPEC §5 wants it: 2×a at 2.50 + 3×b at 2.50 = 12.50."""
    facts = OrderFacts(
        order=order_row("COMPLETED"),
        lines=[Line("a", 2, D("2.50")), Line("b", 3, D("2.50"))],
        payments=[Money("charge", D("12.50"), "cust-1")],
        reservations=[Held("a", 2, D("2.50"), "DEDUCTED"), Held("b", 3, D("2.50"), "DEDUCTED")],
        shipments=[ShipmentRow("ship-1", "SCHEDULED")],
    )
    for name, value in changes.items():
        setattr(facts, name, value)
    return facts


def cancelled(status: str = "CANCELLED", **changes: object) -> OrderFacts:
    """Charged, then refunded; stock released; shipment cancelled."""
    facts = OrderFacts(
        order=order_row(status),
        lines=[Line("a", 2, D("2.50"))],
        payments=[Money("charge", D("5.00"), "cust-1"), Money("refund", D("5.00"), "cust-1")],
        reservations=[Held("a", 2, D("2.50"), "RELEASED")],
        shipments=[ShipmentRow("ship-1", "CANCELLED")],
    )
    for name, value in changes.items():
        setattr(facts, name, value)
    return facts


def check(facts: OrderFacts) -> list[Violation]:
    return check_order(facts, now=NOW, grace=GRACE)


def only(violations: list[Violation]) -> Violation:
    assert len(violations) == 1, [v.as_dict() for v in violations]
    return violations[0]


# -- COMPLETED ---------------------------------------------------------------------------
def test_a_consistent_completed_order_has_no_violation() -> None:
    assert check(completed()) == []


def test_completed_without_a_charge_names_the_order_and_the_amount() -> None:
    facts = completed(payments=[])
    violation = only(check(facts))
    assert violation.check == "completed"
    assert violation.order_id == facts.order.id
    assert violation.expected == "one charge of 12.50 to cust-1"
    assert violation.found == "no charge"
    assert f"./manage.py order saga show {facts.order.id}" in violation.hint
    assert violation.as_dict()["order_id"] == facts.order.id


@pytest.mark.parametrize(
    ("payments", "found"),
    [
        ([Money("charge", D("10.00"), "cust-1")], "charge 10.00 to cust-1"),
        ([Money("charge", D("12.50"), "cust-2")], "charge 12.50 to cust-2"),
    ],
)
def test_completed_with_a_wrong_charge(payments: list[Money], found: str) -> None:
    assert only(check(completed(payments=payments))).found == found


def test_completed_and_refunded() -> None:
    facts = completed(payments=[Money("charge", D("12.50"), "cust-1"), Money("refund", D("12.50"), "cust-1")])
    violation = only(check(facts))
    assert (violation.expected, violation.found) == ("no refund", "refund 12.50 to cust-1")


def test_completed_whose_total_disagrees_with_its_lines() -> None:
    facts = completed()
    facts.order = facts.order._replace(total=D("13.00"))
    facts.payments = [Money("charge", D("13.00"), "cust-1")]
    violation = only(check(facts))
    assert violation.expected == "total 12.50 (Σ quantity × unit price of 2 lines)"
    assert violation.found == "total 13.00"


def test_completed_never_priced() -> None:
    facts = completed(lines=[Line("a", 2, None), Line("b", 3, D("2.50"))])
    facts.order = facts.order._replace(total=None)
    found = [v.found for v in check(facts)]
    assert "total none, unpriced lines a" in found
    assert "no charge" not in found  # a charge exists; it just cannot match a missing total
    assert "charge 12.50 to cust-1" in found


def test_completed_whose_stock_was_not_deducted_points_at_the_parked_order_completed() -> None:
    facts = completed(reservations=[Held("a", 2, D("2.50"), "RESERVED"), Held("b", 3, D("2.50"), "DEDUCTED")])
    violation = only(check(facts))
    assert violation.expected == "deducted: a×2, b×3"
    assert violation.found == "a×2 RESERVED"
    assert f"./manage.py inventory parked list --saga {facts.order.id}" in violation.hint
    assert "OrderCompleted" in violation.hint


def test_completed_with_reservations_that_do_not_match_the_lines() -> None:
    facts = completed(
        reservations=[
            Held("a", 1, D("2.50"), "DEDUCTED"),  # wrong quantity
            Held("b", 3, D("2.00"), "DEDUCTED"),  # wrong price
            Held("c", 1, D("1.00"), "DEDUCTED"),  # not a line
        ]
    )
    violation = only(check(facts))
    assert violation.found == (
        "a×1 DEDUCTED; b priced 2.00 by inventory, 2.50 on the order; c×1 DEDUCTED (not a line of the order)"
    )
    assert "GET /api/reservations/?order_id=" in violation.hint


def test_completed_with_a_missing_reservation() -> None:
    facts = completed(reservations=[Held("a", 2, D("2.50"), "DEDUCTED")])
    assert only(check(facts)).found == "b×3 not reserved"


@pytest.mark.parametrize(
    ("shipments", "found"),
    [
        ([], "no shipment"),
        ([ShipmentRow("ship-1", "CANCELLED")], "shipment ship-1 CANCELLED"),
    ],
)
def test_completed_without_an_active_shipment(shipments: list[ShipmentRow], found: str) -> None:
    violation = only(check(completed(shipments=shipments)))
    assert (violation.expected, violation.found) == ("one SCHEDULED shipment", found)


def test_every_problem_of_one_order_is_its_own_violation() -> None:
    facts = completed(payments=[], reservations=[], shipments=[])
    assert len(check(facts)) == 3


def test_a_parked_message_of_the_saga_is_named_with_its_replay_command() -> None:
    facts = completed(
        reservations=[Held("a", 2, D("2.50"), "RESERVED"), Held("b", 3, D("2.50"), "RESERVED")],
        parked=[ParkedRef("inventory", 12, "OrderCompleted")],
    )
    hint = only(check(facts)).hint
    assert hint.startswith("a message of this saga is parked — replay it first: ")
    assert "./manage.py inventory parked replay 12 (OrderCompleted)" in hint


# -- CANCELLED / REJECTED ----------------------------------------------------------------
@pytest.mark.parametrize("status", ["CANCELLED", "REJECTED"])
def test_consistent_cancelled_and_rejected_orders(status: str) -> None:
    assert check(cancelled(status)) == []
    assert check(cancelled(status, payments=[], reservations=[], shipments=[])) == []


def test_cancelled_with_a_charge_never_refunded() -> None:
    facts = cancelled(payments=[Money("charge", D("5.00"), "cust-1")])
    violation = only(check(facts))
    assert violation.check == "cancelled"
    assert violation.expected == "CANCELLED: net money zero (each charge refunded once)"
    assert violation.found == "charged 5.00 in 1, refunded 0.00 in 0 (charge 5.00 to cust-1)"
    assert f"./manage.py payment parked list --saga {facts.order.id}" in violation.hint


def test_cancelled_with_a_partial_refund() -> None:
    facts = cancelled(payments=[Money("charge", D("5.00"), "cust-1"), Money("refund", D("4.00"), "cust-1")])
    assert only(check(facts)).found.startswith("charged 5.00 in 1, refunded 4.00 in 1")


@pytest.mark.parametrize("held", ["RESERVED", "DEDUCTED"])
def test_rejected_holding_stock(held: str) -> None:
    facts = cancelled("REJECTED", payments=[], reservations=[Held("a", 2, D("2.50"), held)], shipments=[])
    violation = only(check(facts))
    assert (violation.expected, violation.found) == ("REJECTED: no stock held or deducted", f"a×2 {held}")
    assert "./manage.py inventory parked list --saga" in violation.hint


def test_cancelled_with_a_scheduled_shipment() -> None:
    facts = cancelled(shipments=[ShipmentRow("ship-9", "SCHEDULED")])
    violation = only(check(facts))
    assert violation.found == "shipment ship-9 SCHEDULED"
    assert "./manage.py shipping parked list --saga" in violation.hint


# -- in flight, stuck, settling ----------------------------------------------------------
@pytest.mark.parametrize("status", ["PENDING", "COMPENSATING"])
def test_non_terminal_within_deadline_and_grace_is_in_flight(status: str) -> None:
    order = order_row(status, deadline_at=NOW - timedelta(seconds=59))
    assert order_state(order, now=NOW, grace=GRACE) == "in flight"
    assert check(OrderFacts(order=order)) == []


def test_pending_past_deadline_and_grace_is_stuck() -> None:
    order = order_row("PENDING", deadline_at=NOW - timedelta(seconds=61))
    assert order_state(order, now=NOW, grace=GRACE) == "stuck"
    violation = only(check(OrderFacts(order=order)))
    assert violation.check == "stuck"
    assert violation.found == "PENDING 61s after its deadline"
    assert violation.expected == "terminal by 2025-01-01T11:59:59+00:00 (deadline + 60s)"
    assert violation.hint.startswith(f"stuck: see ./manage.py order saga show {order.id}")


def test_a_stuck_compensation_says_what_it_waits_for_and_what_is_parked() -> None:
    order = order_row(
        "COMPENSATING",
        deadline_at=NOW - timedelta(hours=3),
        compensations_expected=["InventoryReleased", "PaymentRefunded"],
        compensations_confirmed=["InventoryReleased"],
    )
    facts = OrderFacts(order=order, parked=[ParkedRef("payment", 7, "ShipmentFailed")])
    violation = only(check(facts))
    assert violation.found == "COMPENSATING 3h00m after its deadline, waiting for PaymentRefunded"
    assert "./manage.py payment parked replay 7 (ShipmentFailed)" in violation.hint


def test_settling_only_with_a_settle_window() -> None:
    order = order_row("COMPLETED", finished_at=NOW - timedelta(seconds=5))
    assert order_state(order, now=NOW, grace=GRACE) == "final"
    assert order_state(order, now=NOW, grace=GRACE, settle=timedelta(seconds=10)) == "settling"
    assert order_state(order, now=NOW, grace=GRACE, settle=timedelta(seconds=3)) == "final"


# -- products, accounts ------------------------------------------------------------------
def test_a_consistent_product() -> None:
    assert check_product(ProductRow("a", available=90, reserved=4, received=100, held=4, deducted=6)) == []


def test_stock_changed_outside_the_saga() -> None:
    violation = only(
        check_product(ProductRow("a", available=91, reserved=4, received=100, held=4, deducted=6))
    )
    assert violation.check == "product"
    assert violation.sku == "a"
    assert violation.expected == "available + reserved + deducted = received 100"
    assert violation.found == "91 + 4 + 6 = 101 (+1)"
    assert violation.as_dict()["sku"] == "a"


def test_reserved_disagrees_with_the_reservations() -> None:
    violation = only(
        check_product(ProductRow("a", available=90, reserved=4, received=100, held=3, deducted=6))
    )
    assert (violation.expected, violation.found) == (
        "reserved 4 = Σ RESERVED reservations",
        "Σ RESERVED reservations = 3",
    )


def test_negative_stock() -> None:
    found = check_product(ProductRow("a", available=-1, reserved=0, received=0, held=0, deducted=1))
    assert [v.expected for v in found] == ["available >= 0 and reserved >= 0"]


def test_accounts() -> None:
    assert check_account(AccountRow("c", D("80.00"), D("100.00"), D("30.00"), D("10.00"))) == []
    violation = only(check_account(AccountRow("c", D("81.00"), D("100.00"), D("30.00"), D("10.00"))))
    assert violation.customer_id == "c"
    assert violation.expected == "balance + charges - refunds = opening balance 100.00"
    assert violation.found == "81.00 + 30.00 - 10.00 = 101.00 (+1.00)"
    overdrawn = check_account(AccountRow("c", D("-1.00"), D("0.00"), D("1.00"), D("0.00")))
    assert [v.expected for v in overdrawn] == ["balance >= 0"]


# -- orphans, outbox, parked -------------------------------------------------------------
def test_orphans_say_whether_something_is_still_held() -> None:
    oid = str(uuid.uuid4())
    charge = orphan_violation(Orphan("payment", oid, [Money("charge", D("5.00"), "c")]))
    assert (charge.check, charge.service, charge.order_id) == ("orphan", "payment", oid)
    assert charge.found == "charge 5.00 to c; no such order"
    assert "refund the charge by hand" in charge.hint
    refunded = orphan_violation(
        Orphan("payment", oid, [Money("charge", D("5.00"), "c"), Money("refund", D("5.00"), "c")])
    )
    assert "nothing is held" in refunded.hint
    held = orphan_violation(Orphan("inventory", oid, [Held("a", 2, D("1.00"), "RESERVED")]))
    assert held.found == "reservation a×2 RESERVED; no such order"
    assert "release the stock by hand" in held.hint
    shipped = orphan_violation(Orphan("shipping", oid, [ShipmentRow("s", "SCHEDULED")]))
    assert "cancel the shipment by hand" in shipped.hint


def test_outbox_names_the_relay_and_the_last_error() -> None:
    row = OutboxRow(3, 125.0, "OrderPlaced", "saga-1", 4, "Traceback…\nConnectionRefusedError: [Errno 111]")
    violation = outbox_violation("order", row, older_than=30)
    assert violation.service == "order"
    assert violation.expected == "no event unpublished for more than 30s"
    assert violation.found == (
        "3 unpublished, oldest 2m05s old (OrderPlaced of saga saga-1, 4 publish attempts, "
        "last error: ConnectionRefusedError: [Errno 111])"
    )
    assert 'make ctl ARGS="status order-relay"' in violation.hint


def test_parked_messages_name_the_replay_or_the_discard() -> None:
    at = NOW - timedelta(hours=1)
    retried = parked_violation(
        "inventory", ParkedRow(12, "OrderCompleted", "saga-1", "retries exhausted", at)
    )
    assert retried.as_dict() | {"hint": None} == {
        "check": "parked",
        "service": "inventory",
        "id": 12,
        "event_type": "OrderCompleted",
        "saga_id": "saga-1",
        "reason": "retries exhausted",
        "parked_at": at.isoformat(),
        "expected": "no message left parked",
        "found": "PARKED since 2025-01-01T11:00:00+00:00: retries exhausted",
        "hint": None,
    }
    assert "./manage.py inventory parked replay 12" in retried.hint
    assert retried.label == "inventory parked #12 OrderCompleted (saga saga-1)"
    malformed = parked_violation("payment", ParkedRow(3, "", None, "malformed event: bad JSON", at))
    assert "replay" not in malformed.hint.split(":")[-1]
    assert "./manage.py payment parked discard 3 --note WHY" in malformed.hint
    assert malformed.label == "payment parked #3 (unreadable) (no saga id)"


# -- streaming ---------------------------------------------------------------------------
def test_keyset_batches_stream_100_000_rows_in_bounded_batches() -> None:
    rows = 100_000
    calls: list[object] = []

    def fetch(after: int | None, limit: int) -> list[tuple[int]]:
        calls.append(after)
        start = 0 if after is None else after + 1
        return [(i,) for i in range(start, min(start + limit, rows))]

    sizes = [len(batch) for batch in keyset_batches(fetch, size=2000)]
    assert max(sizes) == 2000
    assert sum(sizes) == rows
    assert calls[:2] == [None, 1999]
    assert len(calls) == 51  # 50 full batches, then an empty one to learn it was the last


def test_keyset_batches_stop_on_a_short_batch() -> None:
    assert list(keyset_batches(lambda after, limit: [(1,), (2,)], size=3)) == [[(1,), (2,)]]
    assert list(keyset_batches(lambda after, limit: [], size=3)) == []


# -- the whole audit over in-memory sources ----------------------------------------------
class FakeSources:
    """The rows of four databases in lists; the audit reads them as it would PostgreSQL."""

    def __init__(self, facts: Iterable[OrderFacts] = ()) -> None:
        self.facts = sorted(facts, key=lambda f: f.order.id)
        self.product_rows: list[ProductRow] = []
        self.account_rows: list[AccountRow] = []
        self.unaccounted_rows: list[UnaccountedRow] = []
        self.orphan_rows: list[Orphan] = []
        self.outbox_rows: list[tuple[str, OutboxRow]] = []
        self.parked_rows: list[tuple[str, ParkedRow]] = []

    def now(self) -> datetime:
        return NOW

    def order_counts(self) -> dict[str, int]:
        return dict(Counter(f.order.status for f in self.facts))

    def order_batches(self, size: int) -> Iterator[Sequence[OrderRow]]:
        orders = sorted(f.order for f in self.facts)

        def fetch(after: str | None, limit: int) -> list[OrderRow]:
            return [o for o in orders if after is None or o.id > after][:limit]

        return keyset_batches(fetch, size=size, key=lambda o: o.id)

    def related(self, order_ids: list[str]) -> Related:
        by_id = {f.order.id: f for f in self.facts if f.order.id in set(order_ids)}
        return Related(
            lines={k: f.lines for k, f in by_id.items()},
            payments={k: f.payments for k, f in by_id.items()},
            reservations={k: f.reservations for k, f in by_id.items()},
            shipments={k: f.shipments for k, f in by_id.items()},
            parked={k: f.parked for k, f in by_id.items()},
        )

    def products(self) -> tuple[int, Iterable[ProductRow]]:
        return len(self.product_rows), self.product_rows

    def accounts(self) -> tuple[int, Iterable[AccountRow]]:
        return len(self.account_rows), self.account_rows

    def unaccounted(self) -> Iterable[UnaccountedRow]:
        return self.unaccounted_rows

    def orphans(self, size: int, scanned: Counter[str]) -> Iterable[Orphan]:
        scanned["payment"] += len(self.orphan_rows)
        return self.orphan_rows

    def outbox(self, older_than: float) -> Iterable[tuple[str, OutboxRow]]:
        return self.outbox_rows

    def parked(self) -> Iterable[tuple[str, ParkedRow]]:
        return self.parked_rows


def run(sources: FakeSources, **options: object) -> Report:
    report = Report(**options)  # type: ignore[arg-type]
    return audit(sources, report, grace=GRACE, outbox_older_than=30, batch_size=3)


def test_a_clean_system_exits_0_and_says_what_it_checked() -> None:
    in_flight = OrderFacts(order=order_row("PENDING", deadline_at=NOW + timedelta(seconds=10)))
    sources = FakeSources([completed(), completed(), cancelled(), cancelled("REJECTED"), in_flight])
    sources.product_rows = [ProductRow("a", 90, 4, 100, 4, 6)]
    sources.account_rows = [AccountRow("c", D("1.00"), D("1.00"), D(0), D(0))]
    report = run(sources)
    assert report.exit_code == 0
    text = report.render()
    assert "orders    5: PENDING 1, COMPENSATING 0, COMPLETED 2, CANCELLED 1, REJECTED 1" in text
    assert "in flight 1, stuck 0" in text
    assert "products  1 checked" in text
    assert text.endswith("OK: no violation\n")
    summary = report.summary()
    assert summary["ok"] is True
    assert summary["orders"]["in_flight"] == 1


def test_violations_exit_1_grouped_by_check_and_capped() -> None:
    broken = [completed(shipments=[]) for _ in range(4)]
    sources = FakeSources([*broken, cancelled()])
    sources.product_rows = [ProductRow("a", 91, 4, 100, 4, 6)]
    sources.parked_rows = [("payment", ParkedRow(3, "InventoryReserved", "s", "retries exhausted", NOW))]
    report = run(sources, max_print=2)
    assert report.exit_code == 1
    assert report.counts == Counter({"completed": 4, "product": 1, "parked": 1})
    text = report.render()
    assert "completed: 4 violation(s)" in text
    assert "  … and 2 more (all of them: --json FILE)" in text
    assert f"  - order {sorted(f.order.id for f in broken)[0]}: expected one SCHEDULED shipment" in text
    assert (
        "  - product a: expected available + reserved + deducted = received 100; found 91 + 4 + 6 = 101"
        in text
    )
    assert "./manage.py payment parked replay 3" in text
    assert text.endswith("FAILED: 6 violation(s) (completed 4, product 1, parked 1)\n")


def test_settling_differences_are_shown_but_not_counted() -> None:
    recent = completed(
        reservations=[Held("a", 2, D("2.50"), "RESERVED"), Held("b", 3, D("2.50"), "RESERVED")]
    )
    recent.order = recent.order._replace(finished_at=NOW - timedelta(seconds=2))
    report = Report(settle_seconds=10)
    audit(FakeSources([recent]), report, grace=GRACE, settle=timedelta(seconds=10), outbox_older_than=30)
    assert report.exit_code == 0
    assert report.settling == 1
    assert "settling: 1 difference(s) on orders finished in the last 10s" in report.render()


def test_the_json_file_has_every_violation_and_the_summary(tmp_path: Path) -> None:
    path = tmp_path / "audit.json"
    sources = FakeSources([completed(payments=[]) for _ in range(7)])
    recent = completed(shipments=[])
    recent.order = recent.order._replace(finished_at=NOW - timedelta(seconds=1))
    sources.facts.append(recent)
    report = Report(max_print=1, settle_seconds=5, sink=JsonSink(path))
    audit(sources, report, grace=GRACE, settle=timedelta(seconds=5), outbox_older_than=30)
    report.sink.close(report.summary())  # type: ignore[union-attr]
    data = json.loads(path.read_text())
    assert len(data["violations"]) == 7
    assert {v["check"] for v in data["violations"]} == {"completed"}
    assert all(v["order_id"] and v["expected"] and v["found"] and v["hint"] for v in data["violations"])
    assert [v["order_id"] for v in data["settling"]] == [recent.order.id]
    assert data["summary"]["violation_count"] == 7
    assert data["summary"]["violations_by_check"]["completed"] == 7
    assert data["summary"]["orders"]["by_status"]["COMPLETED"] == 8
    assert not list(tmp_path.glob(".audit.json.*"))  # the temporary file was renamed into place


class ManyOrders(FakeSources):
    """Consistent COMPLETED orders, made up batch by batch as the audit asks."""

    def __init__(self, count: int) -> None:
        super().__init__()
        self.count = count
        self.largest_batch = 0

    def order_counts(self) -> dict[str, int]:
        return {"COMPLETED": self.count}

    def order_batches(self, size: int) -> Iterator[Sequence[OrderRow]]:
        finished = NOW - timedelta(hours=1)

        def fetch(after: str | None, limit: int) -> list[OrderRow]:
            start = 0 if after is None else int(after, 16) + 1
            batch = [
                OrderRow(f"{i:032x}", "c", "COMPLETED", D("5.00"), finished, finished, [], [])
                for i in range(start, min(start + limit, self.count))
            ]
            self.largest_batch = max(self.largest_batch, len(batch))
            return batch

        return keyset_batches(fetch, size=size, key=lambda o: o.id)

    def related(self, order_ids: list[str]) -> Related:
        return Related(
            lines={i: [Line("a", 2, D("2.50"))] for i in order_ids},
            payments={i: [Money("charge", D("5.00"), "c")] for i in order_ids},
            reservations={i: [Held("a", 2, D("2.50"), "DEDUCTED")] for i in order_ids},
            shipments={i: [ShipmentRow("s", "SCHEDULED")] for i in order_ids},
            parked={},
        )


def peak_memory_of_auditing(count: int) -> tuple[int, Report, ManyOrders, list[tuple[int, int]]]:
    sources = ManyOrders(count)
    progress: list[tuple[int, int]] = []
    tracemalloc.start()
    try:
        report = audit(
            sources,
            Report(),
            grace=GRACE,
            outbox_older_than=30,
            batch_size=2000,
            progress=lambda done, total: progress.append((done, total)),
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak, report, sources, progress


def test_the_audit_streams_orders_in_bounded_memory() -> None:
    """Four times the orders, the same peak: nothing grows with the number of orders."""
    small, _, _, _ = peak_memory_of_auditing(5_000)
    peak, report, sources, progress = peak_memory_of_auditing(20_000)
    assert report.exit_code == 0
    assert report.states["final"] == 20_000
    assert sources.largest_batch == 2000
    assert progress == [(10_000, 20_000), (20_000, 20_000)]
    assert peak < small * 1.5, f"peak {peak / 1e6:.1f} MB for 20 000 orders, {small / 1e6:.1f} MB for 5 000"
    assert peak < 8 * 1024 * 1024


def test_an_unreachable_database_exits_2_naming_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SAGA_DB_PORT", "1")  # nothing listens there
    assert audit_mod.main([]) == 2
    err = capsys.readouterr().err
    assert "cannot reach the order database (saga_order at 127.0.0.1:1 as saga_order)" in err


def test_database_parameters_follow_the_services_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAGA_INVENTORY_DB_NAME", "elsewhere")
    monkeypatch.setenv("SAGA_DB_HOST", "db.example")
    assert audit_mod.database_params("inventory") == {
        "dbname": "elsewhere",
        "user": "saga_inventory",
        "password": "saga_inventory",
        "host": "db.example",
        "port": "5432",
    }
