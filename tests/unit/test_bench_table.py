"""scripts/bench.py's table: one row per run that placed orders, and nothing for the others."""

from __future__ import annotations

from typing import Any

from tests.support import load_script

table = load_script("bench").table

CEILING = {
    "broker_msgs_per_s": 6000.0,
    "broker_confirm_each_msgs_per_s": 1200.0,
    "sql_steps_per_s": 2500.0,
    "sql_clients": 4,
    "sagas_per_s": 200.0,
    "group_size": 16,
    "broker_group_msgs_per_s": 8000.0,
    "sql_steps_per_s_batched": 5000.0,
    "sagas_per_s_batched": 400.0,
    "deliveries": 8.3,
    "transactions": 9.3,
}


def run(orders: int, sagas_per_s: float, **extra: Any) -> dict[str, Any]:
    return {"orders": orders, "sagas_per_s": sagas_per_s, "p50_ms": 20, "p95_ms": 30, "p99_ms": 40, **extra}


def report(*, idle: int, closed: int) -> dict[str, Any]:
    return {
        "ceiling": CEILING,
        "idle": run(idle, 9.0),
        "closed_loop": {**run(closed, 50.0), "concurrency": 32},
        "open_loop": [run(400, 20.0, offered_per_s=20, seconds=20)],
    }


def _run(side: str, sagas_per_s: float, cpu_ms: float, *, pg: float) -> dict:
    return {
        "side": side,
        "sagas_per_s": sagas_per_s,
        "cpu_ms_per_saga": cpu_ms,
        "cpu_ms_per_saga_by_process": {"pg": pg},
    }


def test_a_run_of_no_orders_has_no_row() -> None:
    printed = table(report(idle=0, closed=0))
    assert "idle" not in printed
    assert "closed loop" not in printed
    assert "open loop 20/s × 20 s" in printed


def columns(printed: str, label: str) -> list[str]:
    """The figures of the row named ``label``: orders, sagas/s, ÷ceiling, ÷batched, p50, p95, p99."""
    (line,) = [line for line in printed.splitlines() if line.startswith(label)]
    return line[len(label) :].split()


def test_each_run_with_orders_has_its_row_and_its_ratio_to_the_ceiling() -> None:
    printed = table(report(idle=3, closed=600))
    assert columns(printed, "idle, one at a time") == ["3", "9.0", "0.04", "0.02", "20", "30", "40"]
    assert columns(printed, "closed loop, C=32") == ["600", "50.0", "0.25", "0.12", "20", "30", "40"]


ab = load_script("bench")


def test_an_ab_alternates_abba_so_a_drifting_machine_favours_neither() -> None:
    assert ab.ab_sequence(2) == ["A", "B", "B", "A"]
    assert ab.ab_sequence(4) == ["A", "B", "B", "A", "A", "B", "B", "A"]


def test_ab_settings_are_the_services_settings_only() -> None:
    assert ab.parse_overrides("SAGA_BATCH_MAX=1 SAGA_PREFETCH=16") == {
        "SAGA_BATCH_MAX": "1",
        "SAGA_PREFETCH": "16",
    }
    for bad in ("BATCH=1", "SAGA_BATCH_MAX"):
        try:
            ab.parse_overrides(bad)
        except ValueError:
            continue
        raise AssertionError(f"{bad!r} was accepted")


def test_the_ab_summary_is_each_sides_mean_and_b_over_a() -> None:
    runs = [
        _run("A", 100.0, 20.0, pg=5.0),
        _run("B", 50.0, 40.0, pg=9.0),
        _run("B", 60.0, 36.0, pg=11.0),
        _run("A", 80.0, 22.0, pg=7.0),
    ]
    summary = ab.ab_summary(runs)
    assert summary["A"]["sagas_per_s"] == 90.0
    assert summary["B"]["sagas_per_s"] == 55.0
    assert summary["b_over_a"]["cpu_ms_per_saga"] == round(38.0 / 21.0, 3)
    assert summary["B"]["cpu_ms_per_saga_by_process"] == {"pg": 10.0}
    assert summary["A"]["commits_per_saga"] is None  # not measured: no figure, no ratio
    assert summary["b_over_a"]["commits_per_saga"] is None
