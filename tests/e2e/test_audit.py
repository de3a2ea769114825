"""``./manage.py audit`` against real databases.

1. The running stack: orders placed over HTTP on four saga paths pass the audit; then
   a product's stock is changed behind the saga's back (``available + 1``, as the
   postgres superuser) and the audit must name that sku and exit 1.
2. Scratch databases with the services' schemas (``pg_dump --schema-only``, the
   audit pointed at them with ``SAGA_<SVC>_DB_NAME``): ``SAGA_AUDIT_SCALE_ORDERS``
   (default 20 000) consistent synthetic orders made with ``generate_series`` must
   audit clean (exit 0) in bounded memory; then one violation of every kind is planted
   and the audit must report exactly those. The running stack's databases are never
   written to by this part, and the scratch databases are dropped afterwards.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from common.services import SERVICES
from tests.support import ROOT, Api, wait_invariants

SCALE = int(os.environ.get("SAGA_AUDIT_SCALE_ORDERS", "20000"))
TABLES = {
    "order": ["orders_order", "orders_orderline"],
    "payment": ["payments_account", "payments_payment"],
    "inventory": ["inventory_product", "inventory_reservation"],
    "shipping": ["shipping_shipment"],
}


def psql(database: str, sql: str) -> str:
    """Run SQL as the postgres superuser (the audit itself only ever reads)."""
    result = subprocess.run(
        ["runuser", "-u", "postgres", "--", "psql", "-v", "ON_ERROR_STOP=1", "-qAt", "-d", database],
        input=sql,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if result.returncode != 0:
        raise AssertionError(f"psql {database} failed: {result.stderr}\n{sql[:2000]}")
    return result.stdout


class AuditRun:
    def __init__(
        self, returncode: int, stdout: str, stderr: str, report: dict[str, Any], seconds: float, rss_kb: int
    ):
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        self.report = report
        self.seconds = seconds
        self.rss_kb = rss_kb

    @property
    def violations(self) -> list[dict[str, Any]]:
        return self.report["violations"]


def run_audit(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> AuditRun:
    """``./manage.py audit --json FILE``, timed, with the peak RSS of that one process."""
    report = tmp_path / f"audit-{uuid.uuid4().hex[:6]}.json"
    out, err = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
    started = time.monotonic()
    with out.open("w") as stdout, err.open("w") as stderr:
        process = subprocess.Popen(
            [sys.executable, str(ROOT / "manage.py"), "audit", "--json", str(report), *args],
            stdout=stdout,
            stderr=stderr,
            env=env,
            cwd=ROOT,
        )
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.monotonic() - started
    data = json.loads(report.read_text()) if report.exists() else {}
    run = AuditRun(process.returncode, out.read_text(), err.read_text(), data, seconds, usage.ru_maxrss)
    assert run.returncode in (0, 1), f"audit failed to run ({run.returncode}): {run.stderr}"
    assert data, f"no JSON report written: {run.stderr}"
    return run


def subject(violation: dict[str, Any]) -> str:
    return next(str(violation[k]) for k in ("order_id", "sku", "customer_id", "service") if k in violation)


# -- the running stack -------------------------------------------------------------------
def test_orders_of_every_path_pass_and_a_stock_changed_behind_the_sagas_back_fails(
    api: Api, tmp_path: Path
) -> None:
    sku = api.product(price="2.50", available=10)
    rich = api.account(balance="100.00")
    poor = api.account(balance="1.00")
    placed = [
        api.place(rich, [(sku, 2)]),  # COMPLETED
        api.place(rich, [(sku, 1000)]),  # REJECTED: out of stock
        api.place(poor, [(sku, 2)]),  # CANCELLED: insufficient funds
        api.place(rich, [(sku, 1)], country="AQ"),  # CANCELLED: charged, then refunded
    ]
    order_ids = [order["id"] for order in placed]
    for order_id in order_ids:
        api.wait_terminal(order_id)
        wait_invariants(api, order_id)
    assert [api.order(oid)["status"] for oid in order_ids] == [
        "COMPLETED",
        "REJECTED",
        "CANCELLED",
        "CANCELLED",
    ]
    ours = {*order_ids, sku, rich, poor}

    clean = run_audit(tmp_path, "--max-print", "1000")
    about_us = [v for v in clean.violations if ours & {str(value) for value in v.values()}]
    assert about_us == [], clean.stdout
    # The shared stack may hold other tests' leftovers (parked messages, say): the exit
    # status must still agree with what was found.
    assert clean.returncode == (1 if clean.violations else 0), clean.stdout
    assert clean.report["summary"]["orders"]["total"] >= 4
    assert clean.report["summary"]["ok"] is (not clean.violations)

    psql("saga_inventory", f"UPDATE inventory_product SET available = available + 1 WHERE sku = '{sku}'")
    try:
        broken = run_audit(tmp_path, "--max-print", "1000")
    finally:
        psql("saga_inventory", f"UPDATE inventory_product SET available = available - 1 WHERE sku = '{sku}'")
    assert broken.returncode == 1, broken.stdout
    mine = [v for v in broken.violations if v.get("sku") == sku]
    assert [(v["check"], v["expected"], v["found"]) for v in mine] == [
        ("product", "available + reserved + deducted = received 10", "9 + 0 + 2 = 11 (+1)")
    ], mine
    assert "changed outside the saga" in mine[0]["hint"]
    assert f"  - product {sku}: expected available + reserved + deducted = received 10" in broken.stdout
    assert "FAILED:" in broken.stdout

    again = run_audit(tmp_path, "--max-print", "1000")
    assert not [v for v in again.violations if v.get("sku") == sku]


# -- scratch databases at scale ----------------------------------------------------------
def order_id(i: int | str) -> str:
    """The uuid PostgreSQL makes of ``md5('audit-scale-' || i)::uuid``."""
    return str(uuid.UUID(hashlib.md5(f"audit-scale-{i}".encode()).hexdigest()))  # noqa: S324 - an id, not a secret


def status_of(i: int) -> str:
    if i % 20 == 0:
        return "CANCELLED"
    if i % 20 == 1:
        return "REJECTED"
    return "PENDING" if i % 50 == 2 else "COMPLETED"


def orders_cte(count: int) -> str:
    """Orders 1..count, their lines (one or two) and totals, the same in every database."""
    return f"""
    WITH o AS (
        SELECT i, md5('audit-scale-' || i)::uuid AS id, 'scale-cust-' || (i % 97) AS customer_id,
               CASE WHEN i % 20 = 0 THEN 'CANCELLED' WHEN i % 20 = 1 THEN 'REJECTED'
                    WHEN i % 50 = 2 THEN 'PENDING' ELSE 'COMPLETED' END AS status
        FROM generate_series(1, {count}) AS i
    ), l AS (
        SELECT o.*, 'scale-sku-' || (i % 7) AS sku, i % 3 + 1 AS quantity, (i % 7 + 1) * 1.25 AS unit_price
        FROM o
        UNION ALL
        SELECT o.*, 'scale-sku-' || ((i + 3) % 7), 1, ((i + 3) % 7 + 1) * 1.25 FROM o WHERE i % 2 = 0
    ), t AS (
        SELECT o.*, tot.total
        FROM o
        JOIN (SELECT i, sum(quantity * unit_price)::numeric(14, 2) AS total FROM l GROUP BY i) tot USING (i)
    )
    """


def synthetic_data(count: int) -> dict[str, str]:
    cte = orders_cte(count)
    return {
        "order": f"""
            {cte}
            INSERT INTO orders_order (id, customer_id, status, failure_reason, total, shipping_address,
                idempotency_key, request_fingerprint, compensations_expected, compensations_confirmed,
                trace_context, deadline_at, created_at, updated_at, finished_at)
            SELECT id, customer_id, status, '', CASE WHEN status = 'REJECTED' THEN NULL ELSE total END,
                   '{{"country": "FR"}}', NULL, '', '[]', '[]', '{{}}',
                   CASE WHEN status = 'PENDING' THEN now() + interval '1 hour'
                        ELSE now() - interval '2 hours' + interval '30 seconds' END,
                   now() - interval '2 hours', now(),
                   CASE WHEN status = 'PENDING' THEN NULL ELSE now() - interval '1 hour' END
            FROM t;
            {cte}
            INSERT INTO orders_orderline (order_id, sku, quantity, unit_price)
            SELECT id, sku, quantity, CASE WHEN status = 'REJECTED' THEN NULL ELSE unit_price END FROM l;
        """,
        "inventory": f"""
            {cte}
            INSERT INTO inventory_product (sku, name, price, available, reserved, received, version,
                created_at, updated_at)
            SELECT sku, sku, min(unit_price),
                   1000000000 - COALESCE(sum(quantity) FILTER (WHERE status IN ('COMPLETED', 'PENDING')), 0),
                   COALESCE(sum(quantity) FILTER (WHERE status = 'PENDING'), 0), 1000000000, 1, now(), now()
            FROM l GROUP BY sku;
            {cte}
            INSERT INTO inventory_reservation (id, order_id, product_id, quantity, unit_price, status,
                created_at, updated_at)
            SELECT gen_random_uuid(), id, sku, quantity, unit_price,
                   CASE status WHEN 'COMPLETED' THEN 'DEDUCTED' WHEN 'CANCELLED' THEN 'RELEASED'
                        ELSE 'RESERVED' END,
                   now(), now()
            FROM l WHERE status <> 'REJECTED';
        """,
        "payment": f"""
            {cte}
            INSERT INTO payments_account (customer_id, balance, opening_balance, created_at, updated_at)
            SELECT customer_id, 100000000 - COALESCE(sum(total) FILTER (WHERE status = 'COMPLETED'), 0),
                   100000000, now(), now()
            FROM t GROUP BY customer_id;
            {cte}
            INSERT INTO payments_payment (id, order_id, customer_id, kind, amount, created_at)
            SELECT gen_random_uuid(), id, customer_id, 'charge', total, now() - interval '90 minutes'
            FROM t WHERE status IN ('COMPLETED', 'CANCELLED')
            UNION ALL
            SELECT gen_random_uuid(), id, customer_id, 'refund', total, now() - interval '80 minutes'
            FROM t WHERE status = 'CANCELLED';
        """,
        "shipping": f"""
            {cte}
            INSERT INTO shipping_shipment (id, order_id, status, country, created_at, updated_at)
            SELECT gen_random_uuid(), id, CASE status WHEN 'COMPLETED' THEN 'SCHEDULED' ELSE 'CANCELLED' END,
                   'FR', now(), now()
            FROM o WHERE status IN ('COMPLETED', 'CANCELLED');
        """,
    }


def outbox_row(age: str, *, published: bool) -> str:
    return (
        "INSERT INTO messaging_outbox (event_id, event_type, routing_key, saga_id, body, created_at, "
        "published_at, publish_attempts, last_error) VALUES "
        "(gen_random_uuid(), 'OrderPlaced', 'order.placed', "
        f"md5('audit-scale-5')::uuid, '{{}}', now() - interval '{age}', "
        f"{'now()' if published else 'NULL'}, {1 if published else 3}, "
        f"'{'' if published else 'ConnectionRefusedError: [Errno 111] Connection refused'}');"
    )


def parked_row(status: str, saga: int) -> str:
    return (
        "INSERT INTO messaging_parked (delivery_key, event_id, event_type, saga_id, reason, attempts, "
        "last_error, headers, body, parked_at, status) VALUES "
        f"(md5(random()::text), gen_random_uuid(), 'OrderCompleted', md5('audit-scale-{saga}')::uuid, "
        f"'retries exhausted after 4 attempts', 4, 'boom', '{{}}', '\\x7b7d', now(), '{status}');"
    )


@pytest.fixture
def scratch(stack: None) -> Iterator[dict[str, str]]:
    """Four empty databases with the services' tables; the environment that points the audit at them."""
    tag = uuid.uuid4().hex[:8]
    env = dict(os.environ)
    made: list[str] = []
    try:
        for service in SERVICES:
            name = f"saga_audit_{tag}_{service}"
            psql("postgres", f"CREATE DATABASE {name}")
            made.append(name)
            tables = [*TABLES[service], "messaging_outbox", "messaging_parked"]
            schema = subprocess.run(
                [
                    "runuser",
                    "-u",
                    "postgres",
                    "--",
                    "pg_dump",
                    "--schema-only",
                    "--no-owner",
                    "--no-privileges",
                ]
                + [f"--table={table}" for table in tables]
                + [f"saga_{service}"],
                capture_output=True,
                text=True,
                timeout=120,
                check=True,
            ).stdout
            psql(name, schema + f"\nGRANT SELECT ON ALL TABLES IN SCHEMA public TO saga_{service};\n")
            env[f"SAGA_{service.upper()}_DB_NAME"] = name
        yield env
    finally:
        for name in made:
            psql("postgres", f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def test_consistent_synthetic_orders_audit_clean_then_every_planted_violation_is_named(
    scratch: dict[str, str], tmp_path: Path
) -> None:
    db = {service: scratch[f"SAGA_{service.upper()}_DB_NAME"] for service in SERVICES}
    started = time.monotonic()
    for service, sql in synthetic_data(SCALE).items():
        psql(db[service], sql)
    psql(db["order"], outbox_row("2 hours", published=True) + outbox_row("1 second", published=False))
    psql(db["inventory"], parked_row("REPLAYED", saga=7))
    loaded = time.monotonic() - started

    clean = run_audit(tmp_path, env=scratch)
    print(
        f"\naudit of {SCALE} synthetic orders: loaded in {loaded:.1f}s, audited in {clean.seconds:.1f}s, "
        f"peak RSS {clean.rss_kb / 1024:.0f} MB"
    )
    assert clean.returncode == 0, clean.stdout
    assert clean.violations == []
    summary = clean.report["summary"]
    statuses = [status_of(i) for i in range(1, SCALE + 1)]
    assert summary["orders"]["by_status"] == {s: statuses.count(s) for s in summary["orders"]["by_status"]}
    assert summary["orders"]["in_flight"] == statuses.count("PENDING")
    assert (summary["products_checked"], summary["accounts_checked"]) == (7, 97)
    assert summary["orphan_scan_orders"]["shipping"] == statuses.count("COMPLETED") + statuses.count(
        "CANCELLED"
    )
    assert "OK: no violation" in clean.stdout
    if SCALE >= 10_000:
        assert "audit: 10000/" in clean.stderr  # progress
    # One batch at a time: the process stays small however many orders there are.
    assert clean.rss_kb < 200 * 1024

    orphan = str(uuid.UUID(hashlib.md5(b"audit-orphan").hexdigest()))  # noqa: S324
    psql(db["shipping"], f"DELETE FROM shipping_shipment WHERE order_id = '{order_id(3)}'")
    psql(
        db["shipping"], f"UPDATE shipping_shipment SET status = 'SCHEDULED' WHERE order_id = '{order_id(20)}'"
    )
    psql(
        db["order"],
        f"UPDATE orders_order SET deadline_at = now() - interval '1 hour' WHERE id = '{order_id(2)}'",
    )
    psql(db["inventory"], "UPDATE inventory_product SET available = available + 1 WHERE sku = 'scale-sku-0'")
    psql(
        db["payment"],
        "UPDATE payments_account SET balance = balance - 1 WHERE customer_id = 'scale-cust-0';"
        "INSERT INTO payments_payment (id, order_id, customer_id, kind, amount, created_at) "
        f"VALUES (gen_random_uuid(), '{orphan}', 'scale-cust-1', 'charge', 5, now());"
        "UPDATE payments_account SET balance = balance - 5 WHERE customer_id = 'scale-cust-1';",
    )
    psql(db["order"], outbox_row("1 hour", published=False))
    psql(db["inventory"], parked_row("PARKED", saga=3))

    broken = run_audit(tmp_path, env=scratch)
    assert broken.returncode == 1, broken.stdout
    found = sorted((v["check"], subject(v)) for v in broken.violations)
    assert found == sorted(
        [
            ("completed", order_id(3)),
            ("cancelled", order_id(20)),
            ("stuck", order_id(2)),
            ("product", "scale-sku-0"),
            ("account", "scale-cust-0"),
            ("orphan", orphan),
            ("outbox", "order"),
            ("parked", "inventory"),
        ]
    ), broken.stdout
    by_check = {v["check"]: v for v in broken.violations}
    assert by_check["completed"]["found"] == "no shipment"
    # The order's saga has a parked message: the hint says to replay it first.
    assert "./manage.py inventory parked replay" in by_check["completed"]["hint"]
    assert by_check["stuck"]["found"].startswith("PENDING 1h00m after its deadline")
    assert by_check["orphan"]["found"] == "charge 5.00 to scale-cust-1; no such order"
    assert by_check["outbox"]["found"].startswith("1 unpublished, oldest 1h00m old (OrderPlaced")
    assert by_check["parked"]["event_type"] == "OrderCompleted"
    for check in ("completed", "cancelled", "stuck", "product", "account", "orphan", "outbox", "parked"):
        assert f"\n{check}: 1 violation(s)" in broken.stdout
    assert "FAILED: 8 violation(s)" in broken.stdout


def test_an_unknown_database_exits_2_and_names_it(stack: None, tmp_path: Path) -> None:
    env = {**os.environ, "SAGA_SHIPPING_DB_NAME": "saga_no_such_database"}
    result = subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "audit", "--json", str(tmp_path / "x.json")],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "cannot reach the shipping database (saga_no_such_database at" in result.stderr
    assert not (tmp_path / "x.json").exists()
