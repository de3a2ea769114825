"""scripts/pinning.py: finding a process tree, pinning it to some cores, and putting it back."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import load_script

pinning = load_script("pinning")
bench = load_script("bench")


def test_descendants_walks_the_whole_tree_from_existing_roots_only() -> None:
    tree = {1: 0, 10: 1, 11: 10, 12: 10, 13: 12, 20: 1, 30: 0}
    assert pinning.descendants([10], tree) == [10, 11, 12, 13]
    assert pinning.descendants([10, 12], tree) == [10, 12, 11, 13]  # each process once
    assert pinning.descendants([99], tree) == []  # a root that is gone
    assert pinning.descendants([30, 20], tree) == [30, 20]


def test_processes_reads_names_with_spaces_and_parentheses(tmp_path: Path) -> None:
    for pid, stat in {
        "7": "7 (celery: worker) S 1 7 7 0 -1 0 0 0 0 0 12 34 0 0",
        "8": "8 (odd) name)) R 7 8 8 0 -1 0 0 0 0 0 5 6 0 0",
    }.items():
        (tmp_path / pid).mkdir()
        (tmp_path / pid / "stat").write_text(stat)
    (tmp_path / "self").mkdir()  # not a process directory
    found = {
        pid: (name, fields[1], fields[11], fields[12]) for pid, name, fields in pinning.processes(tmp_path)
    }
    assert found == {7: ("celery: worker", "1", "12", "34"), 8: ("odd) name)", "7", "5", "6")}
    assert pinning.parents(tmp_path) == {7: 1, 8: 7}


def test_core_counts() -> None:
    most = len(os.sched_getaffinity(0))
    auto = bench.core_counts("auto")
    assert auto[0] == 1
    assert auto[-1] == most
    assert auto == sorted(set(auto))
    assert all(c & (c - 1) == 0 for c in auto[:-1])  # powers of two, then all of them
    assert bench.core_counts("1, 2") == [1, 2]
    assert bench.core_counts("") == []


def test_first_cpus_refuses_more_cores_than_allowed() -> None:
    allowed = os.sched_getaffinity(0)
    assert pinning.first_cpus(1) == {min(allowed)}
    with pytest.raises(ValueError, match="cannot run on"):
        pinning.first_cpus(len(allowed) + 1)


def test_a_process_tree_is_pinned_and_put_back_with_what_started_meanwhile() -> None:
    # A parent with a child, both ours: both are pinned; a grandchild started while pinned
    # inherits the pinning, and all three get their CPUs back.
    parent = subprocess.Popen(  # noqa: S603 - our own interpreter
        [
            sys.executable,
            "-c",
            "import subprocess, sys, time; c = subprocess.Popen([sys.executable, '-c', 'import time;"
            " time.sleep(60)']); sys.stdout.write(f'{c.pid}\\n'); sys.stdout.flush();"
            " sys.stdin.readline(); g = subprocess.Popen([sys.executable, '-c', 'import time;"
            " time.sleep(60)']); sys.stdout.write(f'{g.pid}\\n'); sys.stdout.flush(); time.sleep(60)",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    child = grandchild = 0
    try:
        child = int(parent.stdout.readline())
        before = os.sched_getaffinity(parent.pid)
        one = pinning.first_cpus(1)
        mine = os.sched_getaffinity(0)
        with pinning.Pinned([parent.pid], one) as pinned:
            assert pinned.pids == [parent.pid, child]
            assert pinned.problems == []
            assert pinning.misplaced([parent.pid, child], one) == []
            assert os.sched_getaffinity(0) == one  # the load generator too
            parent.stdin.write("go\n")
            parent.stdin.flush()
            grandchild = int(parent.stdout.readline())
            assert os.sched_getaffinity(grandchild) == one
        assert pinning.misplaced([parent.pid, child, grandchild], before) == []
        assert os.sched_getaffinity(0) == mine
    finally:
        for pid in (child, grandchild):
            if pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        parent.kill()
        parent.wait()
