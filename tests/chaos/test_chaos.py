"""A short `make chaos` run (about two minutes) must end with zero violations."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.support import ROOT

KINDS = {"kill", "rabbitmq", "postgres", "duplicate", "delay", "network"}


def test_a_short_chaos_run_keeps_every_saga_consistent() -> None:
    report_file = ROOT / "test-artifacts" / "chaos-report.json"
    run = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "chaos.py"),
            "--duration",
            "100",
            "--rate",
            "6",
            "--seed",
            "20261126",
            "--report",
            str(report_file),
        ],
        capture_output=True,
        text=True,
        timeout=1500,
        check=False,
    )
    print(run.stdout[-6000:])
    assert report_file.exists(), run.stdout[-3000:] + run.stderr[-3000:]
    report = json.loads(report_file.read_text())
    assert set(report["faults_injected"]) == KINDS, report["faults_injected"]
    assert all(count > 0 for count in report["orders_by_path"].values()), report["orders_by_path"]
    assert report["violations"] == 0, report["violation_samples"]
    # Faults slow sagas down (some miss their deadline and are undone), but never stop them.
    assert report["outcomes_by_path"]["success"].get("COMPLETED", 0) > 0, report["outcomes_by_path"]
    assert report["lost_events"] == {"orders_not_terminal": 0, "unroutable_messages": 0}
    assert report["seconds_to_quiet"] >= 0
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
