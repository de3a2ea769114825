"""The orders a load generator places: one kind per saga path, in a realistic mix.

Shared by ``make chaos`` (scripts/chaos.py) and ``make bench`` (scripts/bench.py), so
the benchmark measures the same mix of paths the chaos run proves correct.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

from scripts.client import Api

PATHS = {  # path: (weight, expected outcome)
    "success": (40, "COMPLETED"),
    "out_of_stock": (8, "REJECTED"),
    "unknown_sku": (8, "REJECTED"),
    "insufficient_funds": (10, "CANCELLED"),
    "unknown_customer": (8, "CANCELLED"),
    "unserved_country": (10, "CANCELLED"),
    "client_cancel": (16, "CANCELLED or COMPLETED"),
}


class World:
    """The products and customers of one run, one kind per saga path."""

    def __init__(
        self, api: Api, run: str, prefix: str = "chaos", *, skus: int = 4, customers: int = 6
    ) -> None:
        self.run = run = f"{prefix}-{run}"
        self.plenty = [api.product(sku=f"{run}-{i}", price="2.00", available=1_000_000) for i in range(skus)]
        self.scarce = api.product(sku=f"{run}-scarce", price="2.00", available=50)
        self.rich = [
            api.account(customer_id=f"{run}-rich-{i}", balance="100000000.00") for i in range(customers)
        ]
        self.poor = [api.account(customer_id=f"{run}-poor-{i}", balance="0.10") for i in range(3)]
        self.ghosts = [f"{run}-ghost-{i}" for i in range(3)]

    @property
    def customers(self) -> list[str]:
        return self.rich + self.poor + self.ghosts

    def order_for(self, path: str, rng: random.Random) -> tuple[dict[str, Any], bool]:
        """The POST body for an order taking ``path``, and whether to cancel it afterwards."""
        items = [
            {"sku": sku, "quantity": rng.randint(1, 3)} for sku in rng.sample(self.plenty, rng.randint(1, 3))
        ]
        customer, country = rng.choice(self.rich), "FR"
        if path == "out_of_stock":
            items = [{"sku": self.scarce, "quantity": 10_000}]
        elif path == "unknown_sku":
            items.append({"sku": f"{self.run}-nosuch", "quantity": 1})
        elif path == "insufficient_funds":
            customer = rng.choice(self.poor)
        elif path == "unknown_customer":
            customer = rng.choice(self.ghosts)
        elif path == "unserved_country":
            country = "AQ"
        body = {"customer_id": customer, "items": items, "shipping_address": {"country": country}}
        return body, path == "client_cancel"


def post_order(
    api: Api,
    body: dict[str, Any],
    key: str,
    *,
    give_up_after: float,
    on_retry: Callable[[int], None] = lambda status: None,
) -> str | None:
    """POST an order, retrying with the same Idempotency-Key until it is accepted; its id, or None.

    ``on_retry`` hears each answer that was not an acceptance: its status, 0 for none."""
    deadline = time.monotonic() + give_up_after
    while time.monotonic() < deadline:
        try:
            response = api.post(
                "order", "/api/orders/", json=body, headers={"Idempotency-Key": key}, timeout=10
            )
        except OSError:  # no answer (scripts.client.ClientError, or requests' errors)
            response = None
        if response is not None and response.status_code in (200, 201):
            return response.json()["id"]
        on_retry(response.status_code if response is not None else 0)
        time.sleep(0.2)
    return None
