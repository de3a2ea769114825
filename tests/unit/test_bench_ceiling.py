"""scripts/bench_ceiling.py: the sagas/s implied by a broker rate and a SQL rate (pure arithmetic)."""

from __future__ import annotations

import pytest

from tests.support import load_script

saga_ceiling = load_script("bench_ceiling").saga_ceiling


def test_costs_of_deliveries_and_transactions_add() -> None:
    # 9 deliveries at 1000/s = 9 ms, 16 transactions at 2000/s = 8 ms: 17 ms per saga.
    assert saga_ceiling(1000.0, 2000.0, deliveries=9, transactions=16) == pytest.approx(1 / 0.017)


def test_one_side_only_is_that_side_rate_divided_by_its_count() -> None:
    assert saga_ceiling(900.0, 1.0, deliveries=9, transactions=0) == pytest.approx(100.0)
    assert saga_ceiling(1.0, 1600.0, deliveries=0, transactions=16) == pytest.approx(100.0)


def test_equal_shares_halve_the_rate() -> None:
    # One delivery and one transaction, each side 500/s alone: the shared machine does 250 sagas/s.
    assert saga_ceiling(500.0, 500.0, deliveries=1, transactions=1) == pytest.approx(250.0)


def test_result_is_below_each_side_alone() -> None:
    both = saga_ceiling(3000.0, 1800.0, deliveries=9, transactions=16)
    assert both < 3000.0 / 9
    assert both < 1800.0 / 16


@pytest.mark.parametrize(
    ("broker", "sql", "deliveries", "transactions"),
    [(0.0, 100.0, 1, 1), (100.0, -1.0, 1, 1), (100.0, 100.0, 0, 0), (100.0, 100.0, -1, 2)],
)
def test_rejects_meaningless_inputs(
    broker: float, sql: float, deliveries: float, transactions: float
) -> None:
    with pytest.raises(ValueError, match="must be"):
        saga_ceiling(broker, sql, deliveries=deliveries, transactions=transactions)
