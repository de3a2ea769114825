"""scripts/machine_sampler.py: I/O wait and disk reads during a bench run, from /proc."""

from __future__ import annotations

import time
from pathlib import Path

from tests.support import load_script

ms = load_script("machine_sampler")

STAT = "cpu  {user} 0 100 {idle} {iowait} 0 0 0 7 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n"
DISKS = (
    "   7       0 loop0 5 0 999 0 0 0 0 0 0 0 0\n"
    " 254       0 vda 10 0 {vda} 0 0 0 0 0 0 0 0\n"
    " 254       1 vda1 10 0 {vda} 0 0 0 0 0 0 0 0\n"
)


def test_cpu_times_reads_iowait_and_the_total_without_guest_time() -> None:
    assert ms.cpu_times(STAT.format(user=500, idle=300, iowait=100)) == (100, 1000)


def test_sectors_read_counts_whole_disks_only() -> None:
    assert ms.sectors_read(DISKS.format(vda=2048), {"vda"}) == 2048  # not vda1 again, not loop0


def test_whole_disks_leaves_out_loop_and_ram_devices(tmp_path: Path) -> None:
    for name in ("loop0", "vda", "nvme0n1", "zram0", "ram1"):
        (tmp_path / name).mkdir()
    assert ms.whole_disks(tmp_path) == {"vda", "nvme0n1"}


def test_summary_counts_the_seconds_of_stall_inside_the_window() -> None:
    samples = [
        ms.Sample(at=1.0, seconds=0.5, iowait=0.60, read_bytes=10_000_000),  # before the window
        ms.Sample(at=2.0, seconds=0.5, iowait=0.10, read_bytes=0),
        ms.Sample(at=2.5, seconds=0.5, iowait=0.30, read_bytes=20_000_000),
        ms.Sample(at=3.0, seconds=0.5, iowait=0.45, read_bytes=30_000_000),
        ms.Sample(at=4.0, seconds=0.5, iowait=0.90, read_bytes=0),  # after it
    ]
    assert ms.summary(samples, 1.5, 3.0) == {
        "stall_seconds": 1.0,
        "iowait_max_pct": 45.0,
        "disk_read_mb": 50.0,
    }
    assert ms.summary([], 0, 10) == {"stall_seconds": 0, "iowait_max_pct": 0.0, "disk_read_mb": 0.0}


def _write(path: Path, text: str) -> None:
    (path.parent / (path.name + ".new")).write_text(text)
    (path.parent / (path.name + ".new")).replace(path)  # the sampler never reads half a file


def _wait_for(condition, seconds: float = 5) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "the sampler took no sample"
        time.sleep(0.01)


def test_the_sampler_turns_counters_into_per_interval_shares(tmp_path: Path) -> None:
    _write(tmp_path / "stat", STAT.format(user=0, idle=0, iowait=0))
    _write(tmp_path / "diskstats", DISKS.format(vda=0))
    sampler = ms.MachineSampler(interval=0.05, proc=tmp_path)
    sampler.disks = {"vda"}
    started = time.monotonic()
    try:
        _wait_for(lambda: sampler.samples)  # it has read the counters' first values
        # 1 000 jiffies more, 600 of them waiting on I/O; 4 096 sectors (2 MiB) read.
        _write(tmp_path / "diskstats", DISKS.format(vda=4096))
        _write(tmp_path / "stat", STAT.format(user=400, idle=0, iowait=600))
        _wait_for(lambda: any(s.iowait > 0 for s in sampler.samples))
        window = sampler.window(started, time.monotonic())
    finally:
        sampler.close()
    assert window["iowait_max_pct"] == 60.0
    assert window["disk_read_mb"] == round(4096 * 512 / 1e6, 1)
    assert window["stall_seconds"] > 0
