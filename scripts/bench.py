#!/usr/bin/env python3
"""`make bench`: how fast the saga runs, measured against what this machine allows.

    scripts/bench.py                       the full run (≈ 6 minutes; make bench: --scale 1,2,4 --cores auto)
    scripts/bench.py --smoke               a tiny run that checks the bench works (make test)
    scripts/bench.py --scale 1,2,4         also re-run the closed loop with 1, 2, 4 workers per service
    scripts/bench.py --cores auto          also re-run it with the whole stack on 1, 2, 4 … cores

Every guarantee stays on: persistent messages, publisher confirms, fsync, outbox, inbox,
ack after commit. In one run it measures

1. the **raw ceiling** (scripts/bench_ceiling.py): plain kombu publish→consume with
   confirms, and the plain-SQL saga step at 4 clients;
2. **idle latency**: sequential success-path orders, one at a time;
3. a **closed loop**: N orders at concurrency C, every saga path mixed (scripts/workload.py),
   each client placing its next order when its last one reached a terminal state;
4. an **open loop** per offered rate: orders arrive at a fixed rate for T seconds,
   whatever the system does; the latency percentiles against offered load are the plot;
5. optionally the closed loop again with 1, 2 and 4 worker processes per service;
6. optionally the closed loop again with the whole stack (and this load generator) pinned
   to 1, 2, 4 … cores (scripts/pinning.py): how throughput grows with the CPUs it gets.

Each run also records what the machine did meanwhile — the share of the CPU waiting on I/O
and the disk's reads (scripts/machine_sampler.py) — so that a p99 of seconds caused by a
stalled disk says so under the table.

Latency is the saga's own: ``finished_at − created_at`` of the order (POST to terminal
state), read from the order database. Throughput is terminal sagas per second. The
system's throughput is also given as a ratio of the ceiling for the deliveries and
transactions one saga needed in this run (counted from the services' inboxes).

Results go to ``var/bench/bench-<time>.json`` and ``.png`` (and ``latest.*``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import resource
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psycopg2  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

import scripts.bench_ceiling as bench_ceiling  # noqa: E402
from common.services import SERVICES  # noqa: E402
from common.settings import database_params  # noqa: E402
from scripts import pinning  # noqa: E402
from scripts.client import Api  # noqa: E402
from scripts.machine_sampler import MachineSampler, cpu_jiffies  # noqa: E402
from scripts.workload import PATHS, World, post_order  # noqa: E402

BROKER_URL = os.environ.get("SAGA_BROKER_URL", "amqp://saga:saga@127.0.0.1:5672/saga")
OUT = ROOT / "var" / "bench"


def say(message: str) -> None:
    sys.stderr.write(f"[bench {time.strftime('%H:%M:%S')}] {message}\n")
    sys.stderr.flush()


def percentile(values: list[float], q: float) -> float | None:
    """The q-th percentile (0–100), nearest-rank; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def latency_summary(values: list[float]) -> dict[str, Any]:
    ms = [v * 1000 for v in values]
    return {
        "count": len(ms),
        "p50_ms": _round(percentile(ms, 50)),
        "p95_ms": _round(percentile(ms, 95)),
        "p99_ms": _round(percentile(ms, 99)),
        "max_ms": _round(max(ms) if ms else None),
        "mean_ms": _round(statistics.fmean(ms) if ms else None),
    }


def _round(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


FAST_POLL_SECONDS = 0.02
BUSY_POLL_SECONDS = 0.05


class Watcher:
    """One thread that sees orders reach a terminal state, straight from the order database.

    Polling the database (read-only, one indexed query every 20 ms for all orders in
    flight, every 50 ms when more than four are) costs the system far less than every
    client polling the REST API.
    """

    def __init__(self) -> None:
        self.conn = psycopg2.connect(
            **database_params("order"), connect_timeout=5, application_name="saga-bench"
        )
        self.conn.set_session(readonly=True, autocommit=True)
        self.waiting: dict[str, threading.Event] = {}
        self.finished: dict[str, dict[str, Any]] = {}
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="watcher", daemon=True)
        self.thread.start()

    def watch(self, order_id: str) -> threading.Event:
        with self.lock:
            event = self.waiting.setdefault(order_id, threading.Event())
            if order_id in self.finished:
                event.set()
            return event

    def _run(self) -> None:
        interval = FAST_POLL_SECONDS
        while not self.stop.wait(interval):
            with self.lock:
                ids = [i for i, e in self.waiting.items() if not e.is_set()]
            # One order at a time (idle latency): poll often, its client waits for it. Many
            # at once: less often; latency is read from the orders' own timestamps anyway,
            # and each poll is a query the machine under test pays for.
            interval = FAST_POLL_SECONDS if len(ids) <= 4 else BUSY_POLL_SECONDS
            if not ids:
                continue
            with self.conn.cursor() as cursor:
                cursor.execute(
                    "SELECT id::text, status, created_at, finished_at FROM orders_order"
                    " WHERE id = ANY(%s::uuid[]) AND finished_at IS NOT NULL",
                    [ids],
                )
                rows = cursor.fetchall()
            with self.lock:
                for order_id, status, created, finished in rows:
                    self.finished[order_id] = {"status": status, "created": created, "finished": finished}
                    self.waiting[order_id].set()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5)
        self.conn.close()


class Runner:
    """Places orders of every path and records each saga's outcome and latency."""

    def __init__(self, world: World, watcher: Watcher, seed: int, machine: MachineSampler) -> None:
        self.world, self.watcher, self.machine = world, watcher, machine
        self.rng = random.Random(seed)
        self.rng_lock = threading.Lock()
        self.local = threading.local()
        self.names, self.weights = zip(*((p, w) for p, (w, _) in PATHS.items()), strict=True)

    def api(self) -> Api:
        if not hasattr(self.local, "api"):
            self.local.api = Api()
        return self.local.api

    def pick(self, path: str | None = None) -> tuple[str, dict[str, Any], bool]:
        with self.rng_lock:
            path = path or self.rng.choices(self.names, self.weights)[0]
            body, cancel = self.world.order_for(path, self.rng)
        return path, body, cancel

    def place(self, path: str | None = None) -> tuple[str, str] | None:
        """POST one order (retrying with its Idempotency-Key); cancel it if the path says so."""
        path, body, cancel = self.pick(path)
        order_id = post_order(self.api(), body, uuid.uuid4().hex, give_up_after=60)
        if order_id is None:
            return None
        if cancel:
            threading.Timer(
                random.uniform(0.02, 0.3),  # noqa: S311 - race the saga
                self._cancel,
                args=(order_id,),
            ).start()
        return order_id, path

    def _cancel(self, order_id: str) -> None:
        with contextlib.suppress(OSError):  # the outcome shows whether it won
            self.api().post("order", f"/api/orders/{order_id}/cancel/", timeout=10)

    def results(self, placed: dict[str, str], timeout: float) -> dict[str, Any]:
        """Wait for every placed order to finish; outcome, latency and throughput by path."""
        deadline = time.monotonic() + timeout
        for order_id in placed:
            self.watcher.watch(order_id).wait(max(0.0, deadline - time.monotonic()))
        rows = {i: self.watcher.finished.get(i) for i in placed}
        done = {i: r for i, r in rows.items() if r}
        by_path: dict[str, dict[str, Any]] = {}
        for path in PATHS:
            ids = [i for i, p in placed.items() if p == path]
            if not ids:
                continue
            lat = [(done[i]["finished"] - done[i]["created"]).total_seconds() for i in ids if i in done]
            by_path[path] = {
                "orders": len(ids),
                "outcomes": dict(Counter(done[i]["status"] for i in ids if i in done)),
                **latency_summary(lat),
            }
        summary: dict[str, Any] = {"orders": len(placed), "unfinished": len(placed) - len(done)}
        if done:
            first = min(r["created"] for r in done.values())
            last = max(r["finished"] for r in done.values())
            span = max((last - first).total_seconds(), 1e-6)
            summary["sagas_per_s"] = round(len(done) / span, 1)
            summary["span_s"] = round(span, 2)
            summary.update(
                latency_summary([(r["finished"] - r["created"]).total_seconds() for r in done.values()])
            )
            summary["outcomes"] = dict(Counter(r["status"] for r in done.values()))
        summary["by_path"] = by_path
        return summary


def idle_latency(runner: Runner, count: int) -> dict[str, Any]:
    placed: dict[str, str] = {}
    started = time.monotonic()
    for _ in range(count):
        got = runner.place("success")
        if got:
            placed[got[0]] = got[1]
            runner.watcher.watch(got[0]).wait(30)
    result = runner.results(placed, timeout=30)
    result["machine"] = runner.machine.window(started, time.monotonic())
    return result


# PostgreSQL's backends add their counts to pg_stat_database and pg_stat_wal at most once a
# second while busy, and within 10 s once idle: read the end of a window after that.
PG_STATS_SETTLE_SECONDS = 11.0


def closed_loop(runner: Runner, orders: int, concurrency: int, *, pg_stats: bool = False) -> dict[str, Any]:
    """N orders from C clients, each placing its next order when its last one ended."""
    return _clients(runner, orders, concurrency, wait=True, pg_stats=pg_stats, label="closed loop")


def burst(runner: Runner, orders: int, concurrency: int) -> dict[str, Any]:
    """N orders placed at once by C clients, each posting its next as soon as the last was
    accepted (not waiting for its saga); sagas/s by the orders' own timestamps, from the
    first order created to the last one finished."""
    return _clients(runner, orders, concurrency, wait=False, pg_stats=True, label="burst")


def _clients(
    runner: Runner, orders: int, concurrency: int, *, wait: bool, pg_stats: bool, label: str
) -> dict[str, Any]:
    placed: dict[str, str] = {}
    lock = threading.Lock()
    budget = iter(range(orders))
    started = time.monotonic()

    def client() -> None:
        while True:
            with lock:
                if next(budget, None) is None:
                    return
            got = runner.place()
            if got is None:
                continue
            with lock:
                placed[got[0]] = got[1]
                n = len(placed)
            if n % max(1, orders // 10) == 0:
                say(f"  {label}: {n}/{orders} placed, {time.monotonic() - started:.0f} s")
            if wait:
                runner.watcher.watch(got[0]).wait(120)

    busy, mine, per_process = cpu_busy_seconds(), client_cpu_seconds(), cpu_by_process()
    wal, commits, consumed = wal_stats(), commits_by_database(), consumer_counts()
    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    result = runner.results(placed, timeout=120)
    result["machine"] = runner.machine.window(started, time.monotonic())
    busy, mine = cpu_busy_seconds() - busy, client_cpu_seconds() - mine
    per_process = cpu_by_process() - per_process
    if pg_stats and placed:
        say(f"  waiting {PG_STATS_SETTLE_SECONDS:.0f} s for PostgreSQL's statistics to settle")
        time.sleep(PG_STATS_SETTLE_SECONDS)
    wal, commits = wal_stats() - wal, commits_by_database() - commits
    consumed = consumer_counts() - consumed
    n = max(1, len(placed))
    result.update(
        concurrency=concurrency,
        # Where the time goes: the whole machine's CPU per saga (the system, PostgreSQL,
        # RabbitMQ, and this load generator, shown apart) and how busy the cores were.
        cpu_ms_per_saga=round(1000 * busy / n, 1),
        client_cpu_ms_per_saga=round(1000 * mine / n, 1),
        cores_busy=round(busy / max(result.get("span_s") or 1, 1e-6), 2),
        cpu_ms_per_saga_by_process={
            name: round(1000 * seconds / n, 2) for name, seconds in per_process.most_common() if seconds > 0
        },
        # PostgreSQL's write-ahead log per saga (the whole server: every service's database):
        # full-page images dominate it when inserts land on many different index pages.
        wal_per_saga={key: round(value / n, 1) for key, value in wal.items()} if pg_stats else {},
        # Every commit in the four databases per saga: the saga's own, the pushers' marks,
        # the relays' and the deadline sweep's (once a second each), this bench's polling.
        commits_per_saga=round(sum(commits.values()) / n, 1) if pg_stats else None,
        commits_per_saga_by_database={key: round(value / n, 1) for key, value in commits.items()}
        if pg_stats
        else {},
        # The consumers: deliveries per saga, basic.ack frames per delivery (1 without group
        # commit), and how many deliveries the batches held.
        deliveries_per_saga=round(consumed["deliveries"] / n, 2),
        acks_per_delivery=round(consumed["acks"] / consumed["deliveries"], 3)
        if consumed["deliveries"]
        else None,
        batches_split=int(consumed["batches_split"]),
        batch_sizes=batch_histogram(consumed),
    )
    return result


def ab_sequence(rounds: int) -> list[str]:
    """A, B, B, A, A, B, B, A …: ``rounds`` closed loops of each side, alternating so that a
    machine that speeds up or slows down during the run favours neither."""
    pattern = ["A", "B", "B", "A"]
    return [pattern[i % 4] for i in range(2 * rounds)]


def parse_overrides(spec: str) -> dict[str, str]:
    """``--ab "SAGA_BATCH_MAX=1 SAGA_PREFETCH=16"`` → {"SAGA_BATCH_MAX": "1", …}."""
    overrides = {}
    for item in spec.replace(",", " ").split():
        name, sep, value = item.partition("=")
        if not sep or not name.startswith(("SAGA_", "OTEL_")):
            raise ValueError(f"{item!r}: expected SAGA_<NAME>=<value>")
        overrides[name] = value
    return overrides


def ab_runs(
    runner: Runner, overrides: dict[str, str], rounds: int, orders: int, concurrency: int
) -> dict[str, Any]:
    """Closed loops alternating between the stack as it runs (A) and with ``overrides`` (B).

    Each switch is `make up` with the other environment (the programs whose settings changed
    restart), then a short unmeasured warm-up. The stack is left as it was found (A).
    """
    sides = {"A": dict(os.environ), "B": {**os.environ, **overrides}}
    current, runs = "A", []
    for number, side in enumerate(ab_sequence(rounds), 1):
        if side != current:
            say(f"A/B: restarting the stack as {side} ({'its own settings' if side == 'A' else overrides})")
            restart_stack(sides[side])
            current = side
            closed_loop(runner, min(64, orders), concurrency)  # warm-up: connections, prepared statements
        say(f"A/B run {number}/{2 * rounds} ({side}): {orders} orders at concurrency {concurrency}")
        point = closed_loop(runner, orders, concurrency, pg_stats=True)
        point["side"] = side
        runs.append(point)
    if current != "A":
        say("A/B: restoring the stack's own settings")
        restart_stack(sides["A"])
    return {"b": overrides, "rounds": rounds, "runs": runs, "summary": ab_summary(runs)}


AB_FIGURES = {
    "sagas_per_s": "sagas/s",
    "cpu_ms_per_saga": "CPU-ms/saga",
    "commits_per_saga": "commits/saga",
    "wal_flushes_per_saga": "WAL flushes/saga",
    "acks_per_delivery": "acks/delivery",
    "p50_ms": "p50 ms",
    "p99_ms": "p99 ms",
}


def ab_figures(run: dict[str, Any]) -> dict[str, float | None]:
    figures = {key: run.get(key) for key in AB_FIGURES}
    figures["wal_flushes_per_saga"] = (run.get("wal_per_saga") or {}).get("flushes")
    return figures


def ab_summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Each side's mean of every figure and of the CPU by process, and B's ratio to A."""
    summary: dict[str, Any] = {}
    for side in ("A", "B"):
        mine = [r for r in runs if r.get("side") == side]
        figures = [ab_figures(r) for r in mine]
        means = {}
        for key in AB_FIGURES:
            values = [f[key] for f in figures if f[key] is not None]
            means[key] = round(statistics.fmean(values), 3) if values else None
        processes: Counter = Counter()
        for r in mine:
            processes.update(r.get("cpu_ms_per_saga_by_process") or {})
        means["cpu_ms_per_saga_by_process"] = {
            k: round(v / max(1, len(mine)), 2) for k, v in processes.most_common()
        }
        summary[side] = means
    summary["b_over_a"] = {
        key: round(summary["B"][key] / summary["A"][key], 3)
        if summary["A"][key] and summary["B"][key]
        else None
        for key in AB_FIGURES
    }
    return summary


def ab_table(ab: dict[str, Any]) -> str:
    b = " ".join(f"{k}={v}" for k, v in ab["b"].items())
    lines = [
        f"A/B in one window: A = the stack's own settings, B = {b}; "
        f"{ab['rounds']} closed loops of each, alternating ABBA",
    ]
    header = f"{'run':<10}" + "".join(f"{label:>17}" for label in AB_FIGURES.values())
    lines += [header, "-" * len(header)]

    def cells(figures: dict[str, Any], fmt: str = ".2f") -> str:
        return "".join(f"{v:>17{fmt}}" if v is not None else f"{'–':>17}" for v in figures.values())

    count: Counter = Counter()
    for run in ab["runs"]:
        count[run["side"]] += 1
        lines.append(f"{run['side']}{count[run['side']]:<9}" + cells(ab_figures(run)))
    summary = ab["summary"]
    for side in ("A", "B"):
        lines.append(f"{'mean ' + side:<10}" + cells({k: summary[side][k] for k in AB_FIGURES}))
    lines.append(f"{'B ÷ A':<10}" + cells(summary["b_over_a"], ".3f"))
    for side in ("A", "B"):
        top = ", ".join(
            f"{k} {v:.1f}" for k, v in list(summary[side]["cpu_ms_per_saga_by_process"].items())[:9]
        )
        lines.append(f"CPU-ms per saga by process, mean of {side}: {top}")
    return "\n".join(lines)


def commits_by_database() -> Counter:
    """Transactions committed so far in each service's database."""
    names = {service: database_params(service)["dbname"] for service in SERVICES}
    try:
        with psycopg2.connect(**database_params("order"), connect_timeout=5) as conn, conn.cursor() as c:
            c.execute(
                "SELECT datname, xact_commit FROM pg_stat_database WHERE datname = ANY(%s)",
                [list(names.values())],
            )
            by_name = dict(c.fetchall())
        conn.close()
    except psycopg2.Error as exc:
        say(f"(no commit counts: {exc})")
        return Counter()
    return Counter({service: int(by_name.get(name, 0)) for service, name in names.items()})


def wal_stats() -> Counter:
    """PostgreSQL's cumulative WAL counters (records, full-page images, kB), server-wide."""
    try:
        with psycopg2.connect(**database_params("order"), connect_timeout=5) as conn, conn.cursor() as c:
            c.execute("SELECT wal_records, wal_fpi, wal_bytes / 1024.0, wal_sync FROM pg_stat_wal")
            records, fpi, kib, syncs = c.fetchone()
        conn.close()
    except psycopg2.Error as exc:
        say(f"(no WAL figures: {exc})")
        return Counter()
    return Counter(
        {"records": int(records), "full_page_images": int(fpi), "kB": float(kib), "flushes": int(syncs)}
    )


BATCH_BUCKETS = ("1", "2", "3", "4", "6", "8", "12", "16", "24", "32", "48", "64", "+Inf")


def consumer_counts() -> Counter:
    """What the services' consumers counted so far (their /metrics, every process of each):
    deliveries, basic.ack frames, group-commit batches and the batch-size histogram."""
    counts: Counter = Counter()
    api = Api()
    for service in SERVICES:
        try:
            text = api.get(service, "/metrics", timeout=10).text
        except OSError as exc:
            say(f"(no consumer figures from {service}: {exc})")
            continue
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == "saga_deliveries_total":
                    counts["deliveries"] += sample.value
                elif sample.name == "saga_acks_total":
                    counts["acks"] += sample.value
                elif sample.name == "saga_batches_total":
                    counts[f"batches_{sample.labels['outcome']}"] += sample.value
                elif sample.name == "saga_batch_size_bucket":
                    counts[f"le_{sample.labels['le'].removesuffix('.0')}"] += sample.value
    return counts


def batch_histogram(counts: Counter) -> dict[str, int]:
    """Batches by size (from the cumulative buckets): {"1": n, "2": n, "3-4": n, …}."""
    histogram, below, low = {}, 0.0, 1
    for le in BATCH_BUCKETS:
        cumulative = counts.get(f"le_{le}", 0.0)
        if cumulative - below:
            high = le if le != "+Inf" else "…"
            histogram[str(low) if str(low) == high else f"{low}-{high}"] = int(cumulative - below)
        below = cumulative
        low = int(le) + 1 if le != "+Inf" else low
    return histogram


def open_loop(runner: Runner, rate: float, seconds: float) -> dict[str, Any]:
    placed: dict[str, str] = {}
    lock = threading.Lock()
    late = Counter()

    def one(path: str | None) -> None:
        got = runner.place(path)
        if got:
            with lock:
                placed[got[0]] = got[1]

    pool = ThreadPoolExecutor(max_workers=max(8, int(rate)))
    interval, start = 1.0 / rate, time.monotonic()
    n = 0
    while (due := start + n * interval) < start + seconds:
        now = time.monotonic()
        if due > now:
            time.sleep(due - now)
        elif now - due > 0.1:
            late["behind"] += 1  # the generator itself could not keep up
        pool.submit(one, None)
        n += 1
    pool.shutdown(wait=True)
    result = runner.results(placed, timeout=120)
    result["machine"] = runner.machine.window(start, time.monotonic())
    result.update(offered_per_s=rate, seconds=seconds, generator_behind=late["behind"])
    return result


def per_saga_work(order_ids: list[str]) -> dict[str, float]:
    """Deliveries handled (inbox rows) and events emitted (outbox rows) per saga, over all services."""
    deliveries = events = 0
    for service in SERVICES:
        with psycopg2.connect(**database_params(service), connect_timeout=5) as conn, conn.cursor() as c:
            c.execute("SELECT count(*) FROM messaging_inbox WHERE saga_id = ANY(%s::uuid[])", [order_ids])
            deliveries += c.fetchone()[0]
            c.execute("SELECT count(*) FROM messaging_outbox WHERE saga_id = ANY(%s::uuid[])", [order_ids])
            events += c.fetchone()[0]
        conn.close()
    n = max(1, len(order_ids))
    # What one saga needs: a transaction per delivery and one for the POST. Marking the
    # emitted events published is batched by the pushers (one UPDATE per 0.2 s at most per
    # process) and left out; the closed loop reports every commit the databases saw.
    return {
        "deliveries": round(deliveries / n, 2),
        "events": round(events / n, 2),
        "transactions": round(deliveries / n + 1, 2),
    }


def cpu_busy_seconds() -> float:
    """CPU seconds this machine spent busy (all cores, all processes) since boot."""
    fields = cpu_jiffies(Path("/proc/stat").read_text())
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields) - idle) / os.sysconf("SC_CLK_TCK")


def cpu_by_process() -> Counter:
    """CPU seconds used so far by each program of the stack (with its children), PostgreSQL
    (all its backends), and the kernel's I/O threads; from /proc."""
    status = subprocess.run(
        [str(ROOT / "scripts" / "stack.sh"), "ctl", "status"], capture_output=True, text=True, check=False
    ).stdout
    programs = {}
    for line in status.splitlines():
        parts = line.replace(",", "").split()
        if "pid" in parts:
            programs[int(parts[parts.index("pid") + 1])] = parts[0].split(":")[0]
    supervisord = ROOT / "var" / "run" / "supervisord.pid"
    with contextlib.suppress(OSError, ValueError):
        programs[int(supervisord.read_text().strip())] = "supervisord"  # it pipes every log line
    tick, used = os.sysconf("SC_CLK_TCK"), Counter()
    for pid, name, fields in pinning.processes():
        ppid = int(fields[1])
        seconds = (int(fields[11]) + int(fields[12])) / tick
        if name == "postgres":
            used["postgres"] += seconds
        elif pid in programs or (ppid in programs and programs[ppid] != "supervisord"):
            used[programs.get(pid) or programs[ppid]] += seconds
        elif name.startswith(("kworker", "jbd2")):
            used["kernel I/O"] += seconds
    return used


def client_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def restart_with_workers(workers: int) -> None:
    env = dict(os.environ)
    for service in SERVICES:
        env[f"SAGA_{service.upper()}_WORKERS"] = str(workers)
    restart_stack(env)


def restart_stack(env: dict[str, str]) -> None:
    """`make up` with ``env``: restarts exactly the programs whose settings changed."""
    result = subprocess.run(
        [str(ROOT / "scripts" / "stack.sh"), "up"], env=env, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise SystemExit(f"could not restart the stack:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")


def core_counts(spec: str) -> list[int]:
    """``--cores``: "" (none), "auto" (1, 2, 4 … and every core this process may use), or "1,2"."""
    if not spec.strip():
        return []
    if spec.strip() == "auto":
        most = len(os.sched_getaffinity(0))
        counts = [1 << i for i in range(most.bit_length()) if 1 << i < most]
        return [*counts, most]
    return [int(c) for c in spec.split(",") if c.strip()]


def stack_roots() -> list[int]:
    """supervisord (every program of the stack runs under it) and PostgreSQL's postmaster
    (the parent of our own backend; absent when PostgreSQL runs on another machine)."""
    roots = []
    with contextlib.suppress(OSError, ValueError):
        roots.append(int((ROOT / "var" / "run" / "supervisord.pid").read_text().strip()))
    with psycopg2.connect(**database_params("order"), connect_timeout=5) as conn, conn.cursor() as c:
        c.execute("SELECT pg_backend_pid()")
        postmaster = pinning.parents().get(c.fetchone()[0])  # while the backend still exists
    conn.close()
    with contextlib.suppress(OSError):
        if postmaster and Path(f"/proc/{postmaster}/comm").read_text().strip() == "postgres":
            roots.append(postmaster)
    return [pid for pid in roots if Path(f"/proc/{pid}").exists()]  # a stale pid file names nobody


def unpin_leftovers() -> None:
    """A bench killed while the stack was pinned (SIGKILL skips the clean-up) leaves it on
    fewer cores, which would spoil every later measurement: put it back on all of ours."""
    everywhere = os.sched_getaffinity(0)
    try:
        pids = pinning.descendants(stack_roots(), pinning.parents())
    except psycopg2.Error:
        return  # the measurements below say what is wrong with the database
    if wrong := pinning.misplaced(pids, everywhere):
        say(f"{len(wrong)} threads of the stack were left pinned (a killed bench?): back on all cores")
        pinning.pin(pids, everywhere)


def on_cores(runner: Runner, count: int, orders: int, concurrency: int) -> dict[str, Any]:
    """The closed loop with the stack, PostgreSQL and this load generator on ``count`` cores."""
    cpus = pinning.first_cpus(count)
    roots = stack_roots()
    with pinning.Pinned(roots, cpus) as pinned:
        wrong = pinning.misplaced(pinned.pids, cpus)
        point: dict[str, Any] = {
            "cores": count,
            "cpus": sorted(cpus),
            "processes": len(pinned.pids),
            "threads_pinned": pinned.threads,
            "threads_misplaced": len(wrong),
            "postgres_pinned": len(roots) > 1,
        }
        if pinned.problems or wrong:
            say(f"  could not pin the stack to {count} core(s): {(pinned.problems or wrong)[:3]}; skipped")
            point.update(skipped=f"could not pin: {(pinned.problems or wrong)[:3]}", orders=0)
            return point
        say(f"  {len(pinned.pids)} processes ({pinned.threads} threads) on CPU(s) {sorted(cpus)}")
        point.update(closed_loop(runner, orders, concurrency))
    return point


def plot(report: dict[str, Any], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        say("matplotlib is not installed: no plot")
        return False
    points = report["open_loop"]
    if not points:
        return False
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    offered = [p["offered_per_s"] for p in points]
    for key, style in (("p50_ms", "o-"), ("p95_ms", "s-"), ("p99_ms", "^-")):
        left.plot(offered, [p.get(key) or float("nan") for p in points], style, label=key.split("_")[0])
    left.set_xlabel("offered load (orders/s)")
    left.set_ylabel("POST → terminal state (ms)")
    left.set_yscale("log")
    left.grid(True, which="both", alpha=0.3)
    left.legend()
    left.set_title("Latency against offered load")
    right.plot(offered, offered, ":", color="grey", label="offered")
    right.plot(offered, [p.get("sagas_per_s") or 0 for p in points], "o-", label="terminal sagas/s")
    ceiling = report["ceiling"].get("sagas_per_s")
    if ceiling:
        right.axhline(ceiling, color="red", linestyle="--", label=f"one-step ceiling {ceiling:.0f}/s")
    batched = report["ceiling"].get("sagas_per_s_batched")
    if batched:
        right.axhline(batched, color="purple", linestyle="-.", label=f"batched ceiling {batched:.0f}/s")
    # Closed loop and burst have no offered rate: drawn as levels beside the open loop.
    for key, color, name in (("closed_loop", "green", "closed loop"), ("burst", "orange", "burst")):
        rate = (report.get(key) or {}).get("sagas_per_s")
        if rate:
            right.axhline(rate, color=color, linestyle=":", label=f"{name} {rate:.0f}/s")
    right.set_xlabel("offered load (orders/s)")
    right.set_ylabel("sagas/s")
    right.grid(True, alpha=0.3)
    right.legend(loc="center right", fontsize=8)
    right.set_title("Throughput")
    fig.suptitle(f"make bench — {report['started_at']}  ({report['machine']})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def table(report: dict[str, Any]) -> str:
    lines = []
    c = report["ceiling"]
    lines.append(
        f"raw ceiling: broker {c['broker_msgs_per_s']:.0f} msg/s (batched confirms), "
        f"{c['broker_confirm_each_msgs_per_s']:.0f} msg/s (confirm each); "
        f"SQL step {c['sql_steps_per_s']:.0f}/s at {c['sql_clients']} clients → "
        f"{c['sagas_per_s']:.0f} sagas/s for {c['deliveries']} deliveries + {c['transactions']} transactions"
    )
    if c.get("sagas_per_s_batched"):
        lines.append(
            f"batched ceiling ({c['group_size']} per commit and per ack): broker "
            f"{c['broker_group_msgs_per_s']:.0f} msg/s, SQL step {c['sql_steps_per_s_batched']:.0f}/s → "
            f"{c['sagas_per_s_batched']:.0f} sagas/s"
        )
    header = (
        f"{'run':<28}{'orders':>7}{'sagas/s':>9}{'÷ceiling':>9}{'÷batched':>9}"
        f"{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}"
    )
    lines += [header, "-" * len(header)]

    def ratio(r: dict[str, Any], key: str) -> str:
        return f"{(r.get('sagas_per_s') or 0) / c[key]:>9.2f}" if c.get(key) else f"{'–':>9}"

    def row(name: str, r: dict[str, Any]) -> None:
        lines.append(
            f"{name:<28}{r['orders']:>7}{r.get('sagas_per_s') or 0:>9.1f}"
            f"{ratio(r, 'sagas_per_s')}{ratio(r, 'sagas_per_s_batched')}"
            f"{r.get('p50_ms') or 0:>9.0f}{r.get('p95_ms') or 0:>9.0f}{r.get('p99_ms') or 0:>9.0f}"
        )

    closed = report["closed_loop"]
    runs = [
        *([("idle, one at a time", report["idle"])] if report["idle"]["orders"] else []),
        *([(f"closed loop, C={closed['concurrency']}", closed)] if closed["orders"] else []),
        *(
            [(f"burst of {report['burst']['orders']}, C={report['burst']['concurrency']}", report["burst"])]
            if report.get("burst", {}).get("orders")
            else []
        ),
        *((f"open loop {p['offered_per_s']:g}/s × {p['seconds']:g} s", p) for p in report["open_loop"]),
        *((f"closed loop, {p['workers']} worker(s)/svc", p) for p in report.get("scale_out", [])),
        *((f"closed loop on {p['cores']} core(s)", p) for p in report.get("cores", [])),
    ]
    for name, r in runs:
        row(name, r)
    if closed.get("cpu_ms_per_saga"):
        top = ", ".join(f"{k} {v:.1f}" for k, v in list(closed["cpu_ms_per_saga_by_process"].items())[:8])
        lines.append(
            f"closed loop: {closed['cpu_ms_per_saga']:.0f} CPU-ms per saga, {closed['cores_busy']:.2f} cores "
            f"busy (load generator {closed['client_cpu_ms_per_saga']:.0f}); by process: {top}"
        )
        if wal := closed.get("wal_per_saga"):
            lines.append(
                f"PostgreSQL per saga: {closed.get('commits_per_saga', 0):.1f} commits (all four databases), "
                f"{wal.get('flushes', 0):.1f} WAL flushes, WAL {wal['records']:.0f} records, "
                f"{wal['full_page_images']:.1f} full-page images, {wal['kB']:.0f} kB"
            )
        if closed.get("acks_per_delivery") is not None:
            lines.append(
                f"consumers: {closed['deliveries_per_saga']:.2f} deliveries per saga, "
                f"{closed['acks_per_delivery']:.2f} acks per delivery; "
                f"batches by size {closed['batch_sizes']}"
            )
    for name, r in runs:
        if (m := r.get("machine") or {}).get("stall_seconds", 0) >= 1:
            lines.append(
                f"{name}: the disk held the machine up for {m['stall_seconds']:.1f} s (≥ 25 % of the CPU "
                f"waiting on I/O, at worst {m['iowait_max_pct']:.0f} %; {m['disk_read_mb']:.0f} MB read)"
            )
    measured = sorted((p for p in report.get("cores", []) if p.get("sagas_per_s")), key=lambda p: p["cores"])
    if len(measured) > 1:
        lines.append(
            "cores: "
            + ", ".join(
                f"{p['cores']} → {p['sagas_per_s']:.1f} sagas/s (×{p['speedup']:.2f})" for p in measured
            )
            + f" against {measured[0]['cores']} core(s) in the same run"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="a tiny run: does the bench work?")
    parser.add_argument("--orders", type=int, default=600, help="closed loop: orders (default 600)")
    parser.add_argument("--concurrency", type=int, default=32, help="closed loop: clients (default 32)")
    parser.add_argument(
        "--burst",
        type=int,
        default=400,
        help="burst: orders placed at once by --concurrency clients (default 400)",
    )
    parser.add_argument("--rates", default="10,20,30,40,50,75", help="open loop: offered orders/s")
    parser.add_argument("--seconds", type=float, default=20, help="open loop: seconds per rate")
    parser.add_argument("--idle", type=int, default=30, help="idle latency: sequential orders")
    parser.add_argument("--scale", default="", help="closed loop again with these workers per service")
    parser.add_argument(
        "--cores", default="", help="closed loop again on 1,2,… cores ('auto': 1, 2, 4 … all); needs root"
    )
    parser.add_argument(
        "--ab",
        default="",
        help="closed loops of the stack as it runs (A) against it with these settings (B), "
        'alternating ABBA: e.g. "SAGA_BATCH_MAX=1"',
    )
    parser.add_argument("--rounds", type=int, default=4, help="A/B: closed loops of each side (default 4)")
    parser.add_argument(
        "--ab-orders", type=int, default=800, help="A/B: orders per closed loop (default 800)"
    )
    parser.add_argument("--ceiling-seconds", type=float, default=4.0)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    try:
        counts = core_counts(args.cores)
    except ValueError:
        parser.error(f"--cores: 'auto' or whole numbers, not {args.cores!r}")
    if bad := [c for c in counts if not 1 <= c <= len(os.sched_getaffinity(0))]:
        parser.error(f"--cores {bad}: this machine lets us use {len(os.sched_getaffinity(0))} core(s)")
    try:
        overrides = parse_overrides(args.ab)
    except ValueError as exc:
        parser.error(f"--ab: {exc}")
    if args.smoke:
        args.orders, args.concurrency, args.rates, args.seconds, args.burst = 20, 4, "5", 3, 10
        args.idle, args.scale, args.ceiling_seconds, args.cores = 3, "", 1.0, "1"
        args.ab_orders, args.rounds = 10, 1

    report: dict[str, Any] = {
        "started_at": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": f"{os.cpu_count()} cores",
        "smoke": args.smoke,
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
        "workers": {s: int(os.environ.get(f"SAGA_{s.upper()}_WORKERS", "1")) for s in SERVICES},
    }
    unpin_leftovers()
    say("raw ceiling: plain kombu publish→consume with confirms, plain-SQL saga step")
    broker = bench_ceiling.broker_ceiling(BROKER_URL, seconds=args.ceiling_seconds)
    sql = bench_ceiling.sql_ceiling(database_params("order"), clients=4, seconds=args.ceiling_seconds)

    run = uuid.uuid4().hex[:6]
    world = World(Api(), run, prefix="bench", skus=50, customers=50)
    watcher, machine = Watcher(), MachineSampler()
    runner = Runner(world, watcher, args.seed, machine)
    try:
        say(f"idle latency: {args.idle} success-path orders, one at a time")
        report["idle"] = idle_latency(runner, args.idle)
        report["closed_loop"] = {"orders": 0, "concurrency": args.concurrency}
        if args.orders > 0:
            say(f"closed loop: {args.orders} orders at concurrency {args.concurrency}")
            report["closed_loop"] = closed_loop(runner, args.orders, args.concurrency, pg_stats=True)
        report["burst"] = {"orders": 0, "concurrency": args.concurrency}
        if args.burst > 0:
            say(f"burst: {args.burst} orders placed at once by {args.concurrency} clients")
            report["burst"] = burst(runner, args.burst, args.concurrency)
        report["open_loop"] = []
        for rate in [float(r) for r in args.rates.split(",") if r.strip()]:
            say(f"open loop: {rate:g} orders/s for {args.seconds:g} s")
            report["open_loop"].append(open_loop(runner, rate, args.seconds))
        work = per_saga_work(list(watcher.finished))
        report["scale_out"] = []
        for workers in [int(w) for w in args.scale.split(",") if w.strip()]:
            say(f"scale-out: restarting every service with {workers} worker process(es)")
            restart_with_workers(workers)
            point = closed_loop(runner, args.orders, args.concurrency)
            point["workers"] = workers
            report["scale_out"].append(point)
        if args.scale:
            say("scale-out: restoring the stack's own worker counts")
            restart_stack(dict(os.environ))
        report["cores"] = []
        for count in core_counts(args.cores):
            say(f"cores: the stack, PostgreSQL and this load generator on {count} core(s)")
            report["cores"].append(on_cores(runner, count, args.orders, args.concurrency))
        if overrides:
            say(f"A/B: {args.rounds} closed loops of {args.ab_orders} orders each way, B = {args.ab}")
            report["ab"] = ab_runs(runner, overrides, args.rounds, args.ab_orders, args.concurrency)
        measured = [p for p in report["cores"] if p.get("sagas_per_s")]
        base = min(measured, key=lambda p: p["cores"], default=None)
        for point in report["cores"]:
            if base and point.get("sagas_per_s"):
                point["speedup"] = round(point["sagas_per_s"] / base["sagas_per_s"], 2)
    finally:
        watcher.close()
        machine.close()

    broker_rate = broker["confirm_batched"]["msgs_per_s"]
    sql_rate = sql[f"steps_per_s_{sql['clients']}"]
    report["ceiling"] = {
        "broker_msgs_per_s": broker_rate,
        "broker_confirm_each_msgs_per_s": broker["confirm_each"]["msgs_per_s"],
        "sql_steps_per_s": sql_rate,
        "sql_steps_per_s_1": sql["steps_per_s_1"],
        "sql_clients": sql["clients"],
        **work,
        "sagas_per_s": round(
            bench_ceiling.saga_ceiling(
                broker_rate, sql_rate, deliveries=work["deliveries"], transactions=work["transactions"]
            ),
            1,
        ),
        # The same machine doing the same work batched as group commit does it: N steps per
        # commit, one multiple-ack per N messages (scripts/bench_ceiling.py).
        "group_size": sql["group_size"],
        "broker_group_msgs_per_s": broker["group"]["msgs_per_s"],
        "sql_steps_per_s_batched": sql["steps_per_s_batched"],
        "sagas_per_s_batched": round(
            bench_ceiling.saga_ceiling(
                broker["group"]["msgs_per_s"],
                sql["steps_per_s_batched"],
                deliveries=work["deliveries"],
                transactions=work["transactions"],
            ),
            1,
        ),
        "broker": broker,
        "sql": sql,
    }
    best = max(
        [report["closed_loop"], report["burst"], *report["open_loop"], *report["scale_out"]],
        key=lambda r: r.get("sagas_per_s") or 0,
    )
    report["best_sagas_per_s"] = best.get("sagas_per_s")
    report["best_ratio_to_ceiling"] = round(
        (best.get("sagas_per_s") or 0) / report["ceiling"]["sagas_per_s"], 2
    )
    report["best_ratio_to_batched_ceiling"] = round(
        (best.get("sagas_per_s") or 0) / report["ceiling"]["sagas_per_s_batched"], 2
    )

    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"bench-{time.strftime('%Y%m%d-%H%M%S')}{'-smoke' if args.smoke else ''}"
    stem.with_suffix(".json").write_text(json.dumps(report, indent=2, default=str))
    plotted = plot(report, stem.with_suffix(".png"))
    for suffix in (".json", ".png"):
        latest = args.out / f"latest{'-smoke' if args.smoke else ''}{suffix}"
        if stem.with_suffix(suffix).exists():
            latest.unlink(missing_ok=True)
            latest.symlink_to(stem.with_suffix(suffix).name)
    print(table(report))  # noqa: T201 - the report
    if report.get("ab"):
        print("\n" + ab_table(report["ab"]))  # noqa: T201
    print(f"\nwritten: {stem.with_suffix('.json')}" + (f" and {stem.with_suffix('.png')}" if plotted else ""))  # noqa: T201
    unfinished = sum(
        r.get("unfinished", 0)
        for r in [
            report["idle"],
            report["closed_loop"],
            report.get("burst") or {},
            *report["open_loop"],
            *report["cores"],
            *(report.get("ab") or {}).get("runs", []),
        ]
    )
    if unfinished:
        say(f"{unfinished} order(s) did not reach a terminal state within 120 s")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
