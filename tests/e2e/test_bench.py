"""`make bench` works (a smoke-sized run): it measures, it writes JSON and a plot.

It checks that the benchmark runs end to end against the real stack and that its
figures are consistent, not how fast anything is (speed is for `make bench`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.support import ROOT, load_script, pid


def test_bench_smoke_measures_every_part_and_writes_json_and_png(tmp_path: Path) -> None:
    # As if an earlier bench had been killed while the stack was pinned to one core.
    several = len(os.sched_getaffinity(0)) > 1
    if several:
        os.sched_setaffinity(pid("order-worker"), {min(os.sched_getaffinity(0))})
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench.py"), "--smoke", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "raw ceiling" in result.stdout
    assert "closed loop" in result.stdout
    assert ("left pinned (a killed bench?): back on all cores" in result.stderr) is several
    report = json.loads((tmp_path / "latest-smoke.json").read_text())
    assert (tmp_path / "latest-smoke.png").stat().st_size > 10_000

    ceiling = report["ceiling"]
    batched = ceiling["broker"]["confirm_batched"]
    assert batched["consumed"] == batched["published"]
    assert ceiling["broker_msgs_per_s"] > 0
    assert ceiling["sql_steps_per_s"] > 0
    # A saga needs at least its forward deliveries, and one transaction more than it has deliveries.
    assert ceiling["deliveries"] >= 2
    assert ceiling["transactions"] > ceiling["deliveries"]
    assert ceiling["sagas_per_s"] > 0
    # The batched ceiling: N steps per commit, one multiple-ack per N messages.
    group = ceiling["broker"]["group"]
    assert group["consumed"] == group["published"] > 0
    assert ceiling["sql_steps_per_s_batched"] > 0
    assert ceiling["sagas_per_s_batched"] > 0

    closed = report["closed_loop"]
    assert closed["orders"] == 20
    assert closed["unfinished"] == 0
    assert sum(closed["outcomes"].values()) == 20
    assert closed["p50_ms"] <= closed["p95_ms"] <= closed["p99_ms"] <= closed["max_ms"]
    assert closed["sagas_per_s"] > 0
    # PostgreSQL's own counters: at least the POST's commit (group commit shares the rest
    # among the saga's deliveries), and WAL written for them.
    assert closed["commits_per_saga"] >= 1
    assert closed["wal_per_saga"]["records"] > 0
    assert closed["wal_per_saga"]["kB"] > 0
    assert report["idle"]["outcomes"] == {"COMPLETED": report["idle"]["orders"]}
    [point] = report["open_loop"]
    assert point["offered_per_s"] == 5
    assert point["unfinished"] == 0
    # Every path's orders ended the way that path ends (out of stock is always rejected, …).
    for path, figures in closed["by_path"].items():
        assert sum(figures["outcomes"].values()) == figures["orders"], (path, figures)
    assert set(closed["by_path"].get("out_of_stock", {}).get("outcomes", {})) <= {"REJECTED"}
    # The consumers' own figures: deliveries per saga, at most one ack per delivery.
    assert closed["deliveries_per_saga"] >= 2
    assert 0 < closed["acks_per_delivery"] <= 1
    assert sum(closed["batch_sizes"].values()) > 0
    burst = report["burst"]
    assert burst["orders"] == 10
    assert burst["unfinished"] == 0
    assert burst["sagas_per_s"] > 0
    assert report["best_ratio_to_ceiling"] == round(
        max(r["sagas_per_s"] for r in [closed, burst, point]) / ceiling["sagas_per_s"], 2
    )

    # What the machine did meanwhile (I/O wait, disk reads), for every run.
    for run in [report["idle"], closed, point, *report["cores"]]:
        machine = run["machine"]
        assert 0 <= machine["iowait_max_pct"] <= 100
        assert 0 <= machine["stall_seconds"] <= run["span_s"] + 30  # within the run and its wait
        assert machine["disk_read_mb"] >= 0

    # The closed loop again on one core: every process of the stack and PostgreSQL's were
    # pinned (read back from the kernel), and everything got its CPUs back afterwards.
    [one] = report["cores"]
    assert one["cores"] == 1
    assert len(one["cpus"]) == 1
    assert "skipped" not in one, one.get("skipped")
    assert one["postgres_pinned"] is True
    assert one["processes"] >= 14  # supervisord's programs and PostgreSQL's processes
    assert one["threads_misplaced"] == 0
    assert one["orders"] == 20
    assert one["unfinished"] == 0
    everywhere = os.sched_getaffinity(0)
    roots = load_script("bench").stack_roots()
    assert len(roots) == 2  # supervisord and PostgreSQL's postmaster
    pinning = load_script("pinning")
    assert pinning.misplaced(pinning.descendants(roots, pinning.parents()), everywhere) == []
