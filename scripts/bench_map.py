#!/usr/bin/env python3
"""`make bench-map`: how long the saga map (the Order admin's home) takes with a million orders.

    scripts/bench_map.py                      1 000 000 orders over the last 24 h, 1 000 of them stuck
    scripts/bench_map.py --orders 100000      fewer (a quick look)
    scripts/bench_map.py --keep               leave the scratch database for a look afterwards

The Order service's schema is migrated into a scratch database of its own
(``saga_order_mapbench``: the stack's data is not touched), then filled with plain SQL:
``--orders`` orders created evenly over ``--hours``, every status of the saga mixed,
``--stuck`` of them open and past their deadline, and ``--events-per-order`` inbox rows
each (events handled, with a lag). Then, as the Order service's relay would, it rolls the
figures up (the first pass over a full inbox, then a steady pass), and asks for the page
in-process (Django's test client, logged in) ``--rounds`` times per window. The other three
services are asked over HTTP as the page always does: the stack should be up (``make up``);
if it is not, their boxes say so and the figure is the Order service's part alone.

Prints, and writes to var/bench/map-<time>.json: the seeding time, the first and the steady
roll-up pass, and the page's median and p95 per window (with the part the four reports took).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DB_NAME = "saga_order_mapbench"


def say(text: str) -> None:
    sys.stdout.write(f"==> {text}\n")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--orders", type=int, default=1_000_000, help="orders in the database (default 1000000)"
    )
    parser.add_argument("--hours", type=float, default=24.0, help="created evenly over the last N hours (24)")
    parser.add_argument("--stuck", type=int, default=1000, help="open orders past their deadline (1000)")
    parser.add_argument("--events-per-order", type=int, default=4, help="inbox rows per order (4)")
    parser.add_argument("--rounds", type=int, default=20, help="page requests per window (20)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    args = parser.parse_args(argv)

    os.environ["SAGA_ORDER_DB_NAME"] = DB_NAME
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "order_svc.settings")
    sys.path.insert(0, str(ROOT))
    import psycopg2

    from common.settings import database_params

    params = database_params("order")
    admin = psycopg2.connect(**{**params, "dbname": "postgres"})
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(f"DROP DATABASE IF EXISTS {DB_NAME}")
        cursor.execute(f"CREATE DATABASE {DB_NAME}")
    try:
        return run(args)
    finally:
        if not args.keep:
            from django.db import connections

            connections.close_all()
            for attempt in range(10):  # an autovacuum worker may still be on it for a moment
                try:
                    with admin.cursor() as cursor:
                        cursor.execute(f"DROP DATABASE IF EXISTS {DB_NAME}")
                    break
                except psycopg2.Error as exc:
                    if attempt == 9:
                        raise SystemExit(f"could not drop {DB_NAME}: {exc}") from exc
                    time.sleep(1)
            say(f"dropped {DB_NAME}")
        admin.close()


def run(args: argparse.Namespace) -> int:
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db import connection
    from django.test import Client
    from django.utils import timezone

    from common.messaging import flow
    from order_svc.orders import sagamap

    say(f"migrating {DB_NAME}")
    call_command("migrate", verbosity=0)
    results: dict[str, object] = {"orders": args.orders, "hours": args.hours, "stuck": args.stuck}
    started = time.perf_counter()
    say(f"seeding {args.orders:,} orders over {args.hours:g} h ({args.stuck:,} stuck)")
    span = args.hours * 3600
    with connection.cursor() as cursor:
        cursor.execute("SET statement_timeout = 0")
        cursor.execute(
            "INSERT INTO orders_order (id, customer_id, status, failure_reason, total, shipping_address,"
            " request_fingerprint, compensations_expected, compensations_confirmed, trace_context,"
            " deadline_at, created_at, updated_at, finished_at)"
            " SELECT gen_random_uuid(), 'c' || (n %% 5000), s.status, '', 10.00, '{\"country\": \"FR\"}',"
            " '', '[]', '[]', '{}', t.at + interval '30 seconds', t.at, t.at,"
            " CASE WHEN s.status IN ('PENDING', 'COMPENSATING') THEN NULL"
            "   ELSE t.at + interval '0.2 seconds' END"
            " FROM generate_series(1, %(orders)s) AS n,"
            " LATERAL (SELECT now() - make_interval(secs => %(span)s * n / %(orders)s) AS at) AS t,"
            " LATERAL (SELECT CASE WHEN n %% %(every)s = 0"
            "   THEN (ARRAY['PENDING', 'COMPENSATING'])[1 + n %% 2]"
            "   ELSE (ARRAY['COMPLETED', 'COMPLETED', 'COMPLETED', 'CANCELLED', 'REJECTED'])[1 + n %% 5]"
            "   END AS status) AS s",
            {"orders": args.orders, "span": span, "every": max(1, args.orders // max(args.stuck, 1))},
        )
        say(f"seeding {args.orders * args.events_per_order:,} inbox rows")
        cursor.execute(
            "INSERT INTO messaging_inbox"
            " (event_id, event_type, saga_id, producer, received_at, occurred_at, attempts)"
            " SELECT gen_random_uuid(), e.event_type, gen_random_uuid(), e.producer, t.at,"
            " t.at - make_interval(secs => 0.002 + (n %% 50) / 1000.0), (n %% 97 = 0)::int"
            " FROM generate_series(1, %(rows)s) AS n,"
            " LATERAL (SELECT now() - make_interval(secs => %(span)s * n / %(rows)s) AS at) AS t,"
            " LATERAL (SELECT (ARRAY['InventoryReserved', 'PaymentCompleted', 'ShipmentScheduled',"
            "   'InventoryDeducted'])[1 + n %% 4] AS event_type,"
            "   (ARRAY['inventory', 'payment', 'shipping', 'inventory'])[1 + n %% 4] AS producer) AS e",
            {"rows": args.orders * args.events_per_order, "span": span},
        )
        cursor.execute("ANALYZE")
    results["seed_seconds"] = round(time.perf_counter() - started, 1)
    say(f"seeded in {results['seed_seconds']} s")

    rollup = flow.FlowRollup(interval=0.001)
    started, passes = time.perf_counter(), 0
    while True:
        rollup._due = 0.0
        if not rollup.roll_if_due():
            raise SystemExit("the roll-up failed: see the log above")
        passes += 1
        if rollup._last_run is not None and timezone.now() - rollup._last_run < flow.CATCH_UP:
            break
    results["first_rollup_seconds"] = round(time.perf_counter() - started, 2)
    results["first_rollup_passes"] = passes
    say(f"first roll-up (from the oldest inbox row): {results['first_rollup_seconds']} s in {passes} passes")
    steady = []
    for _ in range(5):
        rollup._due = 0.0
        began = time.perf_counter()
        rollup.roll_if_due()
        steady.append((time.perf_counter() - began) * 1000)
    results["steady_rollup_ms"] = round(statistics.median(steady), 1)
    every = flow.FlowRollup().interval
    say(f"a steady roll-up pass (every {every:g} s in the relay): {results['steady_rollup_ms']} ms")

    user = get_user_model().objects.create_superuser("mapbench", "m@example.com", "unused")
    client = Client()
    client.force_login(user)
    pages: dict[str, dict[str, float]] = {}
    for window in flow.WINDOWS:
        timings, parts = [], []
        for _ in range(args.rounds):
            began = time.perf_counter()
            response = client.get("/admin/", {"window": window})
            timings.append((time.perf_counter() - began) * 1000)
            assert response.status_code == 200, response.status_code
            began = time.perf_counter()
            sagamap.ask_services(window)
            parts.append((time.perf_counter() - began) * 1000)
        page = response.content.decode()
        answered = "does not answer" not in page
        pages[window] = {
            "median_ms": round(statistics.median(timings), 1),
            "p95_ms": round(sorted(timings)[int(0.95 * (len(timings) - 1))], 1),
            "reports_median_ms": round(statistics.median(parts), 1),
        }
        say(
            f"page, {window:>3}: median {pages[window]['median_ms']} ms, p95 {pages[window]['p95_ms']} ms"
            f" (the four reports: {pages[window]['reports_median_ms']} ms)"
            + ("" if answered else "  [the other services did not answer: is the stack up?]")
        )
    results["page"] = pages
    out = ROOT / "var" / "bench" / f"map-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    say(f"results: {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
