"""Run the whole stack on fewer cores: how throughput grows with the CPUs it gets.

`make bench --cores 1,2` pins every process of the running stack — supervisord's tree
(RabbitMQ, the web processes, workers, relays) and PostgreSQL's (the postmaster and
every backend) — and the load generator to the first k CPUs, runs the closed loop, and
puts everything back. The stack is CPU-bound (both cores busy in every closed loop), so
the curve answers "what would more cores give" with a measurement instead of a guess.

Linux only (``sched_setaffinity``); pinning other users' processes (PostgreSQL's) needs
root or CAP_SYS_NICE. Processes that start while pinned (a new backend forked by the
pinned postmaster) inherit the pinning and are put back too.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path

PROC = Path("/proc")


def processes(proc: Path = PROC) -> Iterator[tuple[int, str, list[str]]]:
    """(pid, command name, the fields after the name) of /proc/<pid>/stat, for every process.

    The fields count from the state: ``fields[1]`` is the parent pid, ``fields[11]`` and
    ``fields[12]`` the user and system CPU time in clock ticks.
    """
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # gone since the listing
        yield (
            int(entry.name),
            stat[stat.index("(") + 1 : stat.rindex(")")],
            stat[stat.rindex(")") + 2 :].split(),
        )


def parents(proc: Path = PROC) -> dict[int, int]:
    """pid → parent pid for every process."""
    return {pid: int(fields[1]) for pid, _, fields in processes(proc)}


def descendants(roots: Iterable[int], tree: dict[int, int]) -> list[int]:
    """``roots`` (those that exist) and every process below them, parents first."""
    children: dict[int, list[int]] = {}
    for pid, ppid in tree.items():
        children.setdefault(ppid, []).append(pid)
    found, todo, seen = [], [r for r in roots if r in tree], set()
    while todo:
        pid = todo.pop(0)
        if pid in seen:
            continue
        seen.add(pid)
        found.append(pid)
        todo.extend(sorted(children.get(pid, [])))
    return found


def first_cpus(count: int) -> set[int]:
    """The first ``count`` CPUs this process may run on."""
    allowed = sorted(os.sched_getaffinity(0))
    if not 1 <= count <= len(allowed):
        raise ValueError(f"cannot run on {count} core(s): this process may use {len(allowed)}")
    return set(allowed[:count])


def threads(pid: int, proc: Path = PROC) -> list[int]:
    try:
        return [int(t.name) for t in (proc / str(pid) / "task").iterdir()]
    except OSError:
        return []


def pin(pids: Iterable[int], cpus: set[int]) -> tuple[int, list[str]]:
    """Set every thread of ``pids`` to run on ``cpus``; (threads pinned, problems).

    A process that exits meanwhile is no problem; one we may not pin (EPERM) is.
    """
    pinned, problems = 0, []
    for pid in pids:
        for tid in threads(pid):
            try:
                os.sched_setaffinity(tid, cpus)
                pinned += 1
            except ProcessLookupError:
                continue
            except OSError as exc:
                problems.append(f"pid {pid} thread {tid}: {exc.strerror or exc}")
    return pinned, problems


def misplaced(pids: Iterable[int], cpus: set[int]) -> list[int]:
    """Threads of ``pids`` whose affinity is not ``cpus`` (read back from the kernel)."""
    wrong = []
    for pid in pids:
        for tid in threads(pid):
            try:
                if os.sched_getaffinity(tid) != cpus:
                    wrong.append(tid)
            except ProcessLookupError:
                continue
    return wrong


class Pinned:
    """``with Pinned(roots, cpus) as p:`` — the trees under ``roots`` and this process on
    ``cpus``; on exit every process under the roots and this process get back the CPUs
    they had (whatever started meanwhile included)."""

    def __init__(self, roots: Iterable[int], cpus: set[int]) -> None:
        self.roots, self.cpus = list(roots), set(cpus)
        self.before = {root: os.sched_getaffinity(root) for root in self.roots}
        self.mine = os.sched_getaffinity(0)
        self.pids: list[int] = []
        self.threads = 0
        self.problems: list[str] = []

    def __enter__(self) -> Pinned:
        self.pids = descendants(self.roots, parents())
        self.threads, self.problems = pin([*self.pids, os.getpid()], self.cpus)
        return self

    def __exit__(self, *exc: object) -> None:
        tree = parents()
        for root, cpus in self.before.items():
            pin(descendants([root], tree), cpus)
        pin([os.getpid()], self.mine)
