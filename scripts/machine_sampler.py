"""What the machine was doing during a bench run: CPU waiting on I/O, and disk reads.

A saga's latency jumps to seconds for everyone at once when the disk stalls (the WAL's
flushes wait behind other reads: docs/performance.md, "Stalls of the whole machine").
`make bench` samples ``/proc/stat`` and ``/proc/diskstats`` twice a second and reports,
for each run, how long the CPU spent mostly waiting on I/O: a p99 of seconds at a load
the system otherwise handles in milliseconds then names its cause.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

STALL_IOWAIT = 0.25  # a sample with at least this share of the CPU waiting on I/O
SECTOR = 512  # /proc/diskstats counts 512-byte sectors, whatever the device's own size


def cpu_jiffies(stat_text: str) -> list[int]:
    """user, nice, system, idle, iowait, irq, softirq, steal: the ``cpu`` line of /proc/stat
    (all cores; guest time is already in user, so it is left out)."""
    return [int(x) for x in stat_text.split("\n", 1)[0].split()[1:9]]


def cpu_times(stat_text: str) -> tuple[int, int]:
    """(iowait, total) jiffies."""
    fields = cpu_jiffies(stat_text)
    return fields[4], sum(fields)


def sectors_read(diskstats_text: str, disks: set[str]) -> int:
    """Sectors read so far from whole disks (``disks``); partitions would count twice."""
    total = 0
    for line in diskstats_text.splitlines():
        parts = line.split()
        if len(parts) > 5 and parts[2] in disks:
            total += int(parts[5])
    return total


def whole_disks(sys_block: Path = Path("/sys/block")) -> set[str]:
    """Block devices that are disks, not partitions, loop devices or RAM disks."""
    try:
        names = {p.name for p in sys_block.iterdir()}
    except OSError:
        return set()
    return {n for n in names if not n.startswith(("loop", "ram", "zram"))}


@dataclass(frozen=True)
class Sample:
    at: float  # time.monotonic() at the end of the interval
    seconds: float  # the interval's length
    iowait: float  # share of the CPU waiting on I/O in it, 0..1
    read_bytes: int  # read from disk in it


def summary(samples: list[Sample], start: float, end: float) -> dict[str, float]:
    """The samples that ended within [start, end]: seconds of stall, worst I/O wait, reads."""
    inside = [s for s in samples if start < s.at <= end]
    return {
        "stall_seconds": round(sum(s.seconds for s in inside if s.iowait >= STALL_IOWAIT), 1),
        "iowait_max_pct": round(100 * max((s.iowait for s in inside), default=0.0), 1),
        "disk_read_mb": round(sum(s.read_bytes for s in inside) / 1e6, 1),
    }


class MachineSampler:
    """A daemon thread sampling the machine every ``interval`` seconds (Linux /proc)."""

    def __init__(self, interval: float = 0.5, proc: Path = Path("/proc")) -> None:
        self.interval, self.proc = interval, proc
        self.disks = whole_disks()
        self.samples: list[Sample] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="machine-sampler", daemon=True)
        self.thread.start()

    def _read(self) -> tuple[float, int, int, int]:
        iowait, total = cpu_times((self.proc / "stat").read_text())
        read = sectors_read((self.proc / "diskstats").read_text(), self.disks)
        return time.monotonic(), iowait, total, read

    def _run(self) -> None:
        try:
            last = self._read()
        except OSError:
            return  # not Linux: the report has no machine figures
        while not self.stop.wait(self.interval):
            try:
                now = self._read()
            except (OSError, ValueError, IndexError):
                continue  # an unreadable moment: the next sample spans it
            ticks = max(1, now[2] - last[2])
            sample = Sample(
                at=now[0],
                seconds=now[0] - last[0],
                iowait=(now[1] - last[1]) / ticks,
                read_bytes=(now[3] - last[3]) * SECTOR,
            )
            with self.lock:
                self.samples.append(sample)
            last = now

    def window(self, start: float, end: float) -> dict[str, float]:
        with self.lock:
            samples = list(self.samples)
        return summary(samples, start, end)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5)
