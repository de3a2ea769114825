#!/usr/bin/env python3
"""Place one order per saga path on the running stack and print each timeline."""

from __future__ import annotations

import sys
import uuid
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scripts.client import Api  # noqa: E402


def show(title: str, order: dict) -> None:
    print(f"\n── {title}")
    print(f"   order {order['id']}  status {order['status']}  total {order['total']}")
    if order["failure_reason"]:
        print(f"   reason: {order['failure_reason']}")
    start = previous = None
    for step in order["timeline"]:
        at = datetime.fromisoformat(step["at"])
        start = start or at
        since = (at - previous).total_seconds() * 1000 if previous else 0.0
        previous = at
        elapsed = (at - start).total_seconds() * 1000
        print(f"   {elapsed:7.1f} ms  (+{since:6.1f})  {step['event_type']:<18} from {step['service']}")


def main() -> int:
    api = Api()
    run = uuid.uuid4().hex[:6]
    sku = api.product(sku=f"demo-widget-{run}", price="12.50", available=5)
    rich = api.account(customer_id=f"demo-alice-{run}", balance="500.00")
    poor = api.account(customer_id=f"demo-bob-{run}", balance="5.00")
    paths = [
        ("success", rich, [(sku, 2)], "FR", "COMPLETED"),
        ("out of stock", rich, [(sku, 50)], "FR", "REJECTED"),
        ("unknown sku", rich, [(f"no-such-sku-{run}", 1)], "FR", "REJECTED"),
        ("insufficient funds", poor, [(sku, 1)], "FR", "CANCELLED"),
        ("unknown customer", f"demo-nobody-{run}", [(sku, 1)], "FR", "CANCELLED"),
        ("unserved country (AQ)", rich, [(sku, 1)], "AQ", "CANCELLED"),
    ]
    placed = [
        (title, api.place(customer, items, country), want) for title, customer, items, country, want in paths
    ]
    failures = 0
    for title, order, want in placed:
        final = api.wait_terminal(order["id"])
        show(f"{title}: expected {want}", final)
        failures += final["status"] != want
    stock = api.stock(sku)
    print(f"\nstock of {sku}: available {stock['available']}, reserved {stock['reserved']} (of 5; 2 sold)")
    print(f"balances: {rich} {api.balance(rich)} (of 500.00), {poor} {api.balance(poor)} (of 5.00)")
    if failures:
        print(f"\n{failures} path(s) did not end as expected", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
