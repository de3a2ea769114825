#!/usr/bin/env python3
"""`make cluster-chaos`: load along every saga path while hosts, nodes and links fail.

    scripts/cluster_chaos.py --duration 900 --rate 4 [--faults broker-kill,broker-partition,...]

Runs against the cluster of `make cluster` (scripts/cluster.py), through its gateway on
127.0.0.1, the load of `make chaos` (scripts/chaos.py: every saga path, client
cancellations, a failed POST retried with its Idempotency-Key). Meanwhile, one at a time:

    broker-kill       SIGKILL every process of a RabbitMQ host, boot it again 5–20 s later
    broker-partition  a RabbitMQ host's link down for 10–40 s, its node alive (a partition)
    app-cut           an app host's link down for 10 s, its processes alive
    app-kill          SIGKILL every process of an app host, boot it again 3–10 s later
    postgres          PostgreSQL on saga-db stopped -m immediate, started 3–10 s later
                      (crash recovery); meanwhile a POST is answered 503 + Retry-After
    kill              SIGKILL of one web, worker or relay process on an app host
    duplicate, delay  30 % of deliveries delivered twice or late, for 8 s (every process)

Then heals everything, waits for quiet, runs the audit, prints and writes the report
(var/cluster/report.json) and exits non-zero on any violation or lost event.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from common.services import DEFAULT_PORTS, SERVICES  # noqa: E402
from scripts import chaos, cluster  # noqa: E402 - chaos: the load, the verdict, the report's head
from scripts.client import Api, ClientError, order_body  # noqa: E402
from scripts.stackops import queue_depth  # noqa: E402
from scripts.workload import World  # noqa: E402

KINDS = ("broker-kill", "broker-partition", "app-cut", "app-kill", "postgres", "kill", "duplicate", "delay")
FAULTS_FILE = cluster.CLUSTER / "faults"  # every app host's processes read it (scripts/cluster.py)


def metric_total(name: str, **labels: str) -> float:
    """``name`` summed over every service on every app host (each host has its own files)."""
    total = 0.0
    for host in cluster.APPS:
        for port in DEFAULT_PORTS.values():
            url = f"http://{cluster.address(host)}:{port}/metrics"
            try:
                with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - an app host
                    total += chaos.metric_sum(response.read().decode(), name, labels)
            except OSError:
                continue
    return total


def wait_for(what: str, check, timeout: float) -> float:  # noqa: ANN001 - a predicate
    """Poll ``check`` until it holds; the seconds it took (-1 if it never did)."""
    began = time.monotonic()
    while time.monotonic() - began < timeout:
        try:
            if check():
                return time.monotonic() - began
        except Exception:  # noqa: BLE001, S110 - not ready yet
            pass
        time.sleep(0.5)
    chaos.say(f"{what}: not after {timeout:.0f}s")
    return -1.0


def nodes_running() -> int:
    return max(len(cluster.running_nodes(host)) for host in cluster.RABBITS)


def leaders() -> dict[str, str]:
    """The node leading each service's events queue (the management API, through the gateway)."""
    try:
        queues = cluster.management("queues/saga")
    except OSError:
        return {}
    wanted = {f"{service}.events" for service in SERVICES}
    # No leader while one is being elected: the API says null.
    return {
        q["name"]: (q.get("leader") or "none").removeprefix("rabbit@") for q in queues if q["name"] in wanted
    }


def post_status() -> tuple[int, str, str]:
    """One POST /api/orders/ through the gateway: status, Retry-After, the JSON error code."""
    try:
        response = Api().post(
            "order",
            "/api/orders/",
            json=order_body("probe", [("probe", 1)]),
            headers={"Idempotency-Key": uuid.uuid4().hex},
            timeout=10,
        )
    except ClientError:
        return 0, "", ""
    try:
        body = response.json()
    except ValueError:
        body = {}
    return response.status_code, response.headers.get("Retry-After", ""), str(body.get("unavailable", ""))


class ClusterFaults:
    """Injects one fault at a time, each healed before the next; records what each cost."""

    def __init__(self, kinds: list[str], seed: int) -> None:
        self.kinds, self.rng = kinds, random.Random(seed + 1)
        self.injected = Counter()
        self.failed = Counter()  # injections that raised: the run does not count as passed
        self.log: list[dict[str, Any]] = []
        self.stop = threading.Event()

    def _pause(self, low: float, high: float) -> float:
        """Wait a random while (cut short when the run ends); how long it really waited."""
        began = time.monotonic()
        self.stop.wait(self.rng.uniform(low, high))
        return time.monotonic() - began

    def _broker(
        self, fail: Callable[[str], str], mend: Callable[[str], None], low: float, high: float
    ) -> dict:
        """A RabbitMQ host failed for a random while, then mended; when its node was back,
        and which nodes led the events queues before and during."""
        host = self.rng.choice(cluster.RABBITS)
        before = leaders()
        what = fail(host)
        try:
            down = self._pause(low, high)
            during = leaders()
        finally:
            mend(host)
        back = wait_for(f"{host} back in the cluster", lambda: nodes_running() == 3, 180)
        return {
            "host": host,
            "what": f"{what}, down {down:.0f}s",
            "rejoined_s": back,
            "leaders": {"before": before, "during": during},
        }

    def inject(self, kind: str) -> dict[str, Any]:
        if kind == "broker-kill":
            return self._broker(lambda host: f"SIGKILL {cluster.kill(host)} processes", cluster.boot, 5, 20)
        if kind == "broker-partition":
            return self._broker(_partition, cluster.join, 10, 40)
        if kind == "app-cut":
            host = self.rng.choice(cluster.APPS)
            cluster.cut(host)
            try:
                time.sleep(10)  # always the whole 10 s, even as the run ends
            finally:
                cluster.join(host)
            return {"host": host, "what": "link down 10s"}
        if kind == "app-kill":
            host = self.rng.choice(cluster.APPS)
            killed = cluster.kill(host)
            down = self._pause(3, 10)
            cluster.boot(host)
            ports = list(DEFAULT_PORTS.values())
            back = wait_for(f"{host} healthy", lambda: all(_healthy(host, p) for p in ports), 180)
            return {"host": host, "what": f"SIGKILL {killed} processes, down {down:.0f}s", "healthy_s": back}
        if kind == "postgres":
            cluster.stop_postgres_immediately()
            try:
                time.sleep(1)
                probe = post_status()
                down = self._pause(3, 10)
            finally:
                cluster.ctl("saga-db", "start", "postgres")
            back = wait_for("PostgreSQL answering", lambda: post_status()[0] in (201, 400, 409, 422), 120)
            return {
                "host": "saga-db",
                "what": f"stopped -m immediate, {down:.0f}s down",
                "post_while_down": {"status": probe[0], "retry_after": probe[1], "unavailable": probe[2]},
                "answering_s": back,
            }
        if kind == "kill":
            host = self.rng.choice(cluster.APPS)
            role = self.rng.choice(["web", "worker", "relay"])
            program = f"{self.rng.choice(list(SERVICES))}-{role}"
            cluster.ctl(host, "signal", "KILL", program, check=False)
            return {"host": host, "what": f"SIGKILL {program}"}
        if kind in ("duplicate", "delay"):
            tmp = FAULTS_FILE.with_suffix(".tmp")
            tmp.write_text(f"consumer.receive={kind}@0.3")
            tmp.replace(FAULTS_FILE)
            self.stop.wait(8)
            FAULTS_FILE.unlink(missing_ok=True)
            return {"what": f"{kind} 30% of deliveries for 8s"}
        raise ValueError(kind)

    def calm(self, thread: threading.Thread) -> None:
        """Stop injecting (the fault in progress heals itself first), then heal everything."""
        self.stop.set()
        thread.join(timeout=300)
        heal()

    def run(self) -> None:
        first = list(self.kinds)
        self.rng.shuffle(first)
        while not self.stop.is_set():
            self.stop.wait(self.rng.uniform(2, 6))
            if self.stop.is_set():
                break
            kind = first.pop(0) if first else self.rng.choice(self.kinds)
            began = time.time()
            try:
                entry = self.inject(kind)
                self.injected[kind] += 1
            except Exception as exc:  # noqa: BLE001 - reported, and fails the run (main)
                entry = {"what": f"injection failed: {exc!r}"}
                self.failed[kind] += 1
            entry = {"kind": kind, "began": began, "ended": time.time(), **entry}
            self.log.append(entry)
            chaos.say(f"fault {kind}: {entry.get('host', '')} {entry['what']}")


def _partition(host: str) -> str:
    cluster.cut(host)
    return "link down"


def _healthy(host: str, port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://{cluster.address(host)}:{port}/healthz", timeout=3) as response:
            return response.status == 200
    except OSError:
        return False


def heal() -> None:
    """Every link up, every host booted, PostgreSQL started, every program started."""
    FAULTS_FILE.unlink(missing_ok=True)
    for host in cluster.HOSTS:
        cluster.join(host)
        cluster.boot(host)
    cluster.ctl("saga-db", "start", "postgres", check=False)
    for host in cluster.APPS:
        cluster.ctl(host, "start", "all", check=False, timeout=300)
    wait_for("3 RabbitMQ nodes", lambda: nodes_running() == 3, 300)
    cluster.rebalance()  # leaders on every node, as after make cluster
    for host in cluster.APPS:
        wait_for(f"{host} healthy", lambda h=host: all(_healthy(h, p) for p in DEFAULT_PORTS.values()), 300)


def quiesce(api: Api, world: World, timeout: float) -> float:
    """Every order of the run terminal, every service queue and outbox empty."""

    def quiet() -> bool:
        busy = sum(
            api.get("order", f"/api/orders/?customer_id={customer}&status={status}", timeout=10).json()[
                "count"
            ]
            for customer in world.customers
            for status in ("PENDING", "COMPENSATING")
        )
        busy += sum(queue_depth(f"{s}.events") for s in SERVICES)
        return busy == 0 and metric_total("saga_outbox_backlog") == 0

    return wait_for("quiet", quiet, timeout)


def parse_time(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def in_flight(
    log: list[dict[str, Any]], sagas: dict[str, tuple[float, float, str, str]]
) -> list[dict[str, Any]]:
    """For each fault, the sagas in flight while it lasted: how many, how they ended, how long
    they took, against the sagas that met no fault."""
    hit: set[str] = set()
    for entry in log:
        began, ended = entry["began"], entry["ended"]
        touched = [oid for oid, (start, end, _, _) in sagas.items() if start <= ended and end >= began]
        hit.update(touched)
        durations = [sagas[oid][1] - sagas[oid][0] for oid in touched]
        entry["in_flight"] = {
            "sagas": len(touched),
            "outcomes": dict(Counter(sagas[oid][2] for oid in touched)),
            "cancelled_by_deadline": sum("deadline passed" in sagas[oid][3] for oid in touched),
            "median_s": round(statistics.median(durations), 2) if durations else None,
            "max_s": round(max(durations), 2) if durations else None,
        }
    calm = [end - start for oid, (start, end, _, _) in sagas.items() if oid not in hit]
    return [
        {"sagas_without_fault": len(calm), "median_s": round(statistics.median(calm), 2) if calm else None}
    ]


def by_kind(log: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each fault kind over the run: how often, the sagas in flight, the slowest of them,
    and how long recovery took (a node back in the cluster, a host healthy, a database
    answering)."""
    kinds: dict[str, dict[str, Any]] = {}
    for entry in log:
        if entry["what"].startswith("injection failed"):
            continue  # counted in faults_failed
        flight = entry.get("in_flight", {})
        kind = kinds.setdefault(
            entry["kind"], {"injected": 0, "in_flight": 0, "medians_s": [], "max_s": 0.0, "deadline": 0}
        )
        kind["injected"] += 1
        kind["in_flight"] += flight.get("sagas", 0)
        if flight.get("median_s") is not None:
            kind["medians_s"].append(flight["median_s"])
            kind["max_s"] = max(kind["max_s"], flight["max_s"])
        kind["deadline"] += flight.get("cancelled_by_deadline", 0)
        for key in ("rejoined_s", "healthy_s", "answering_s"):
            if key in entry:
                kind.setdefault(key, []).append(round(entry[key], 1))
    for kind in kinds.values():
        medians = sorted(kind.pop("medians_s"))
        kind["median_of_medians_s"] = medians[len(medians) // 2] if medians else None
    return kinds


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        description="Load and faults on the cluster of make cluster, then the audit."
    )
    parser.add_argument("--duration", type=float, default=300, help="seconds of load and faults")
    parser.add_argument("--rate", type=float, default=4, help="orders placed per second")
    parser.add_argument("--faults", default=",".join(KINDS), help=f"comma-separated, of: {', '.join(KINDS)}")
    parser.add_argument("--seed", type=int, default=int(time.time()))
    parser.add_argument("--quiet-timeout", type=float, default=600, help="max seconds to wait for quiet")
    parser.add_argument("--report", default=str(cluster.CLUSTER / "report.json"))
    args = parser.parse_args(argv)
    kinds = [k.strip() for k in args.faults.split(",") if k.strip()]
    unknown = set(kinds) - set(KINDS)
    if unknown:
        parser.error(f"unknown fault kind(s): {', '.join(sorted(unknown))}; known: {', '.join(KINDS)}")
    if not cluster.RUNNING.exists():
        print("error: the cluster is not running: make cluster", file=sys.stderr)
        return 2
    report_path = Path(args.report)
    report_path.parent.mkdir(parents=True, exist_ok=True)
    run = uuid.uuid4().hex[:6]
    chaos.say(f"cluster run {run}: {args.duration:.0f}s at {args.rate}/s, seed {args.seed}")
    chaos.say(f"faults: {', '.join(kinds)}")
    heal()
    api = Api()
    world = World(api, run)
    duplicates_before = metric_total("saga_deliveries_total", outcome="duplicate")
    load = chaos.Load(world, args.rate, args.seed)
    faults = ClusterFaults(kinds, args.seed)
    chaos.under_faults(load, faults, args.duration)
    chaos.say("waiting for the system to go quiet")
    quiet_seconds = quiesce(api, world, args.quiet_timeout)
    chaos.say(f"quiet after {quiet_seconds:.1f}s" if quiet_seconds >= 0 else "NOT quiet: giving up waiting")
    audit_file = report_path.parent / "audit.json"
    audit_file.unlink(missing_ok=True)
    audit_run = subprocess.run(  # noqa: S603 - our own command
        [str(ROOT / "scripts" / "stack.sh"), "client", sys.executable, str(ROOT / "manage.py"), "audit",
         "--json", str(audit_file)],
        capture_output=True, text=True, check=False, timeout=1800,
    )  # fmt: skip
    audit = json.loads(audit_file.read_text()) if audit_file.exists() else {}
    duplicates = metric_total("saga_deliveries_total", outcome="duplicate") - duplicates_before
    orders, placed = chaos.the_orders(api, load)
    not_terminal = placed.pop("orders_not_terminal")
    sagas = {
        order_id: (parse_time(o["created_at"]), parse_time(o["updated_at"]), o["status"], o["failure_reason"])
        for order_id, o in orders.items()
        if o["status"] in chaos.TERMINAL
    }
    calm = in_flight(faults.log, sagas)
    report = chaos.run_report(
        run, args, placed, faults, quiet_seconds, audit_run.returncode, audit, not_terminal, duplicates
    )
    report |= {
        "faults_by_kind": by_kind(faults.log),
        "faults_failed": dict(faults.failed),
        "sagas_without_fault": calm[0],
    }
    report_path.write_text(json.dumps(report, indent=2) + "\n")
    print_report(report, audit_run.stdout)
    print(f"report: {report_path}")
    if faults.failed:
        print(f"FAILED: faults that could not be injected: {dict(faults.failed)}")
    return 0 if chaos.passed(report) and not faults.failed else 1


def print_report(report: dict[str, Any], audit_text: str) -> None:
    chaos.print_orders(report, "cluster chaos report")
    print(f"{'fault':<17} {'host':<14} {'in flight':>9} {'median s':>9} {'max s':>7}  what")
    for entry in report["fault_log"]:
        flight = entry.get("in_flight", {})
        print(
            f"{entry['kind']:<17} {entry.get('host', ''):<14} {flight.get('sagas', 0):>9} "
            f"{flight.get('median_s') or 0:>9} {flight.get('max_s') or 0:>7}  {entry['what']}"
        )
    heading = ("by kind", "injected", "in flight", "median s", "max s", "deadline")
    print("{:<17} {:>8} {:>9} {:>9} {:>7} {:>8}  recovery s".format(*heading))
    for kind, row in sorted(report["faults_by_kind"].items()):
        recovery = row.get("rejoined_s") or row.get("healthy_s") or row.get("answering_s") or ""
        print(
            f"{kind:<17} {row['injected']:>8} {row['in_flight']:>9} {row['median_of_medians_s'] or 0:>9} "
            f"{row['max_s']:>7} {row['deadline']:>8}  {recovery}"
        )
    calm = report["sagas_without_fault"]
    print(f"sagas that met no fault: {calm['sagas_without_fault']}, median {calm['median_s']}s")
    chaos.print_verdict(report, audit_text)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
