#!/usr/bin/env python3
"""`make chaos`: run the whole system under load while injecting faults, then audit it.

    scripts/chaos.py --duration 900 --rate 8 --faults kill,rabbitmq,postgres,duplicate,delay,network

1. Starts an unreliable TCP proxy in front of RabbitMQ (``network``) and restarts the
   stack to go through it (and with the production retry tiers and deadline).
2. Places orders at ``--rate`` per second that take every saga path (success, out of
   stock, unknown sku, insufficient funds, unknown customer, unserved country, client
   cancellation), retrying a failed POST with its Idempotency-Key.
3. Meanwhile, at random moments, injects each enabled fault kind: SIGKILL of a random
   worker, relay or web process (supervisor restarts it), RabbitMQ stop_app/start_app,
   pg_terminate_backend of every service connection, duplicated and delayed deliveries
   (the fault-injection file), and the proxy dropping connections and adding latency.
4. Stops the faults, waits for the system to go quiet, runs the consistency audit,
   prints a report (also written as JSON) and restores the normal stack.

Exit status: 0 when the audit found no violation and no order was left non-terminal.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from common.services import SERVICES  # noqa: E402
from scripts.client import Api, ClientError  # noqa: E402
from scripts.stackops import (  # noqa: E402
    StackError,
    clear_faults,
    ctl,
    queue_depth,
    rabbitmqctl,
    set_faults,
    terminate_db_connections,
)
from scripts.workload import PATHS, World, post_order  # noqa: E402

KINDS = ("kill", "rabbitmq", "postgres", "duplicate", "delay", "network")
TERMINAL = {"COMPLETED", "CANCELLED", "REJECTED"}


def say(message: str) -> None:
    print(f"[chaos {time.strftime('%H:%M:%S')}] {message}", flush=True)


def stack_up(env: dict[str, str]) -> None:
    result = subprocess.run(
        [str(ROOT / "scripts" / "stack.sh"), "up"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    if result.returncode != 0:
        raise SystemExit(f"make up failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")


class Load:
    """Places orders at a steady rate from a pool of threads; never loses an order it placed."""

    def __init__(self, world: World, rate: float, seed: int) -> None:
        self.world, self.rate, self.rng = world, rate, random.Random(seed)
        self.placed: dict[str, str] = {}  # order id → path
        self.placed_at: dict[str, float] = {}  # order id → when its POST was answered (epoch)
        self.failures = Counter()
        self.answers = Counter()  # status of each POST answer that was retried (0: no answer)
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.pool = ThreadPoolExecutor(max_workers=24)

    def one(self, path: str, body: dict[str, Any], cancel: bool) -> None:
        api = Api()
        order_id = post_order(api, body, uuid.uuid4().hex, give_up_after=120, on_retry=self._retried)
        if order_id is None:
            with self.lock:
                self.failures["post_gave_up"] += 1
            return
        with self.lock:
            self.placed[order_id] = path
            self.placed_at[order_id] = time.time()
        if cancel:
            time.sleep(random.uniform(0, 0.3))  # noqa: S311 - race the saga
            self._cancel(api, order_id)

    def _retried(self, status: int) -> None:
        with self.lock:
            self.failures["post_retried"] += 1
            self.answers[status] += 1

    def _cancel(self, api: Api, order_id: str) -> None:
        for _ in range(20):
            try:
                if api.post("order", f"/api/orders/{order_id}/cancel/", timeout=10).status_code in (202, 409):
                    return
            except ClientError:
                pass
            time.sleep(0.5)

    def run(self) -> None:
        names, weights = zip(*((p, w) for p, (w, _) in PATHS.items()), strict=True)
        interval = 1.0 / self.rate
        next_at = time.monotonic()
        while not self.stop.is_set():
            path = self.rng.choices(names, weights)[0]
            body, cancel = self.world.order_for(path, self.rng)
            self.pool.submit(self.one, path, body, cancel)
            next_at += interval
            self.stop.wait(max(0.0, next_at - time.monotonic()))

    def finish(self) -> None:
        self.stop.set()
        self.pool.shutdown(wait=True)


class Faults:
    """Injects each enabled fault kind at random moments (every kind early on, then at random)."""

    def __init__(
        self, kinds: list[str], seed: int, proxy: subprocess.Popen | None, broker_gap: float = 30.0
    ) -> None:
        self.kinds, self.rng, self.proxy = kinds, random.Random(seed + 1), proxy
        self.broker_gap = broker_gap
        self.broker_last = -float("inf")
        self.broker_down = 0.0  # seconds RabbitMQ was really unavailable, over the run
        self.injected = Counter()
        self.log: list[dict[str, Any]] = []
        self.stop = threading.Event()
        self.file_faults: dict[str, float] = {}  # spec → until (monotonic)

    def _programs(self, role: str) -> list[str]:
        names = [line.split()[0] for line in ctl("status", check=False).stdout.splitlines() if line.strip()]
        return [
            n for n in names if f"-{role}" in n and not n.startswith(("flower", "rabbitmq", "order-beat"))
        ]

    def _file(self) -> None:
        now = time.monotonic()
        self.file_faults = {spec: until for spec, until in self.file_faults.items() if until > now}
        if self.file_faults:
            set_faults(",".join(self.file_faults))
        else:
            clear_faults()

    def inject(self, kind: str) -> str:
        if kind == "kill":
            role = self.rng.choice(["worker", "relay", "web"])
            target = self.rng.choice(self._programs(role))
            ctl("signal", "KILL", target, check=False)
            return f"SIGKILL {target}"
        if kind == "rabbitmq":
            # The outage is what the services see: from the moment stop_app starts closing
            # their connections until start_app has the node serving again (stop_app alone
            # takes seconds: it closes every connection and flushes the queues).
            down = self.rng.uniform(1, 4)
            began = time.monotonic()
            rabbitmqctl("stop_app")
            stopping = time.monotonic() - began
            self.stop.wait(down)
            rabbitmqctl("start_app")
            outage = time.monotonic() - began
            self.broker_down += outage
            self.broker_last = time.monotonic()
            return f"RabbitMQ unavailable {outage:.1f}s (stop_app {stopping:.1f}s, then {down:.1f}s stopped)"
        if kind == "postgres":
            return f"terminated {terminate_db_connections()} PostgreSQL connections"
        if kind in ("duplicate", "delay"):
            spec = f"consumer.receive={kind}@0.3"
            self.file_faults[spec] = time.monotonic() + 8
            self._file()
            return f"{kind} 30% of deliveries for 8s"
        if kind == "network" and self.proxy is not None:
            self.proxy.send_signal(signal.SIGUSR2)
            return "proxy unruly (drops and latency)"
        return "nothing"

    def run(self) -> None:
        first = list(self.kinds)
        self.rng.shuffle(first)
        while not self.stop.is_set():
            self.stop.wait(self.rng.uniform(2, 6))
            self._file()
            if self.stop.is_set():
                break
            kind = first.pop(0) if first else self.rng.choice(self.kinds)
            if kind == "rabbitmq" and time.monotonic() - self.broker_last < self.broker_gap:
                # A whole-broker outage at most every broker_gap seconds: denser, and no saga
                # could finish within its deadline, which would prove nothing.
                kind = self.rng.choice([k for k in self.kinds if k != "rabbitmq"] or ["rabbitmq"])
            try:
                what = self.inject(kind)
            except Exception as exc:  # noqa: BLE001 - a failed injection is reported, not fatal
                what = f"injection failed: {exc}"
            self.injected[kind] += 1
            self.log.append({"at": time.strftime("%H:%M:%S"), "kind": kind, "what": what})
            say(f"fault: {what}")

    def calm(self, thread: threading.Thread) -> None:
        """Stop injecting (letting an injection in progress finish), then undo what lasts."""
        self.stop.set()
        thread.join(timeout=60)  # e.g. a RabbitMQ stop in progress restarts it itself
        clear_faults()
        if self.proxy is not None:
            self.proxy.send_signal(signal.SIGUSR1)
        for _ in range(10):
            try:
                rabbitmqctl("start_app")  # a no-op when it is running
                break
            except StackError:
                time.sleep(2)
        ctl("start", "all", check=False)


class Injector(Protocol):
    injected: Counter
    log: list[dict[str, Any]]

    def run(self) -> None: ...

    def calm(self, thread: threading.Thread) -> None: ...


def under_faults(load: Load, faults: Injector, duration: float) -> None:
    """The load and the faults side by side for ``duration`` seconds, with progress every
    10 s; then both stopped, also on Ctrl-C: no fault may outlive the run."""
    threads = [
        threading.Thread(target=load.run, daemon=True),
        threading.Thread(target=faults.run, daemon=True),
    ]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    try:
        while time.monotonic() - started < duration:
            time.sleep(min(10, duration - (time.monotonic() - started)))
            say(
                f"{time.monotonic() - started:5.0f}s: {len(load.placed)} orders placed, "
                f"{sum(faults.injected.values())} faults injected"
            )
    finally:
        say("stopping the faults (one in progress ends first) and the load")
        faults.calm(threads[1])
        load.finish()
        threads[0].join(timeout=60)


def the_orders(api: Api, load: Load) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Every order the run placed, as the API shows it now, and the report's fields about
    them: by path and outcome, cancelled by their deadline, not terminal."""
    orders = {order_id: api.order(order_id) for order_id in load.placed}
    outcomes: dict[str, Counter] = {path: Counter() for path in PATHS}
    for order_id, path in load.placed.items():
        outcomes[path][orders[order_id]["status"]] += 1
    return orders, {
        "orders_placed": len(load.placed),
        "post_failures": dict(load.failures),
        "post_answers_retried": {str(k): v for k, v in sorted(load.answers.items())},
        "orders_by_path": {p: sum(c.values()) for p, c in outcomes.items()},
        "outcomes_by_path": {p: dict(c) for p, c in outcomes.items()},
        "expected_by_path": {p: expected for p, (_, expected) in PATHS.items()},
        "cancelled_by_deadline": sum("deadline passed" in o["failure_reason"] for o in orders.values()),
        "orders_not_terminal": sum(o["status"] not in TERMINAL for o in orders.values()),
    }


def run_report(
    run: str,
    args: argparse.Namespace,
    placed: dict[str, Any],
    faults: Injector,
    quiet_seconds: float,
    audit_exit_code: int,
    audit: dict[str, Any],
    not_terminal: int,
    duplicates: float,
) -> dict[str, Any]:
    """What every chaos report says (make chaos's and make cluster-chaos's)."""
    violations = audit.get("violations", [])
    return {
        "run": run,
        "seed": args.seed,
        "duration_seconds": args.duration,
        "rate": args.rate,
        **placed,
        "faults_injected": dict(faults.injected),
        "fault_log": faults.log,
        "seconds_to_quiet": round(quiet_seconds, 1),
        "audit_exit_code": audit_exit_code,
        "violations": len(violations),
        "violation_samples": violations[:20],
        "lost_events": {
            "orders_not_terminal": not_terminal,
            "unroutable_messages": queue_depth("saga.unroutable"),
        },
        "duplicates_absorbed": duplicates,
    }


def metric_sum(text: str, name: str, labels: dict[str, str]) -> float:
    """The samples of ``name`` with ``labels`` in Prometheus text, added up."""
    return sum(
        float(line.rpartition(" ")[2])
        for line in text.splitlines()
        if line.startswith(name) and all(f'{k}="{v}"' in line for k, v in labels.items())
    )


def counters(api: Api, name: str, **labels: str) -> float:
    found = 0.0
    for service in SERVICES:
        try:
            found += metric_sum(api.get(service, "/metrics", timeout=10).text, name, labels)
        except ClientError:
            continue
    return found


def non_terminal(api: Api, world: World) -> int:
    count = 0
    for customer in world.customers:
        for status in ("PENDING", "COMPENSATING"):
            response = api.get("order", f"/api/orders/?customer_id={customer}&status={status}", timeout=10)
            count += response.json()["count"]
    return count


def quiesce(api: Api, world: World, timeout: float) -> float:
    """Wait for every order of the run to be terminal and every queue and outbox empty."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            busy = non_terminal(api, world)
            busy += sum(queue_depth(f"{s}.events") for s in SERVICES)
            busy += counters(api, "saga_outbox_backlog")
        except Exception:  # noqa: BLE001 - a service may still be restarting
            busy = 1
        if busy == 0:
            return time.monotonic() - started
        time.sleep(1)
    return -1.0


def run_chaos(
    args: argparse.Namespace,
    kinds: list[str],
    run: str,
    chaos_env: dict[str, str],
    proxy: subprocess.Popen | None,
    report_path: Path,
) -> tuple[dict[str, Any], str]:
    say(f"run {run}: {args.duration:.0f}s at {args.rate}/s, faults {', '.join(kinds)}, seed {args.seed}")
    say("restarting the stack for the run" + (" (broker through the flaky proxy)" if proxy else ""))
    stack_up(chaos_env)
    api = Api()
    world = World(api, run)
    duplicates_before = counters(api, "saga_deliveries_total", outcome="duplicate")
    load = Load(world, args.rate, args.seed)
    faults = Faults(kinds, args.seed, proxy, broker_gap=args.broker_gap)
    under_faults(load, faults, args.duration)
    say("waiting for the system to go quiet")
    quiet_seconds = quiesce(api, world, args.quiet_timeout)
    say(f"quiet after {quiet_seconds:.1f}s" if quiet_seconds >= 0 else "NOT quiet: giving up waiting")
    audit_file = report_path.parent / "audit.json"
    audit_run = subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "audit", "--json", str(audit_file)],
        capture_output=True,
        text=True,
        check=False,
        env=chaos_env,
        timeout=1800,
    )
    audit = json.loads(audit_file.read_text()) if audit_file.exists() else {}
    duplicates = counters(api, "saga_deliveries_total", outcome="duplicate") - duplicates_before
    orders, placed = the_orders(api, load)
    not_terminal = placed.pop("orders_not_terminal")
    proxy_stats = {}
    if proxy is not None:
        stats_file = report_path.parent / "proxy-stats.json"
        proxy_stats = json.loads(stats_file.read_text()) if stats_file.exists() else {}
    report = run_report(
        run, args, placed, faults, quiet_seconds, audit_run.returncode, audit, not_terminal, duplicates
    )
    report |= {
        "proxy": proxy_stats,
        "broker_unavailable_seconds": round(faults.broker_down, 1),
    }
    report_path.write_text(json.dumps(report, indent=2) + "\n")
    return report, audit_run.stdout


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description="Run the system under load and faults, then audit it.")
    parser.add_argument("--duration", type=float, default=120, help="seconds of load and faults")
    parser.add_argument("--rate", type=float, default=4, help="orders placed per second")
    parser.add_argument("--faults", default=",".join(KINDS), help=f"comma-separated, of: {', '.join(KINDS)}")
    parser.add_argument("--seed", type=int, default=int(time.time()))
    parser.add_argument(
        "--broker-gap", type=float, default=30, help="at least this many seconds between RabbitMQ outages"
    )
    parser.add_argument("--quiet-timeout", type=float, default=300, help="max seconds to wait for quiet")
    parser.add_argument("--report", default=str(ROOT / "var" / "chaos" / "report.json"))
    parser.add_argument("--proxy-port", type=int, default=5673)
    args = parser.parse_args(argv)
    kinds = [k.strip() for k in args.faults.split(",") if k.strip()]
    unknown = set(kinds) - set(KINDS)
    if unknown:
        parser.error(f"unknown fault kind(s): {', '.join(sorted(unknown))}; known: {', '.join(KINDS)}")
    report_path = Path(args.report)
    report_path.parent.mkdir(parents=True, exist_ok=True)
    run = uuid.uuid4().hex[:6]
    base_env = dict(os.environ)
    chaos_env = {
        **base_env,
        "SAGA_RETRY_DELAYS": base_env.get("SAGA_CHAOS_RETRY_DELAYS", "1,5,30"),
        "SAGA_ORDER_DEADLINE_SECONDS": base_env.get("SAGA_CHAOS_DEADLINE_SECONDS", "30"),
    }
    # The contended services, and the order service (it consumes the most events: every
    # outcome and every compensation), get two worker processes unless told otherwise.
    for name in ("SAGA_ORDER_WORKERS", "SAGA_INVENTORY_WORKERS", "SAGA_PAYMENT_WORKERS"):
        chaos_env.setdefault(name, "2")
    proxy = None
    if "network" in kinds:
        amqp = int(base_env.get("SAGA_AMQP_PORT", "5672"))
        proxy = subprocess.Popen(  # noqa: S603 - our own script
            [
                sys.executable,
                str(ROOT / "scripts" / "flaky_proxy.py"),
                "--listen",
                str(args.proxy_port),
                "--target",
                str(amqp),
                "--drop-per-minute",
                "3",
                "--latency-ms",
                "30",
                "--stats",
                str(report_path.parent / "proxy-stats.json"),
                "--start-calm",
            ],
            # Not our stdout: a child holding that pipe would keep our caller waiting.
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        # The services connect through the proxy, each as its own user (common/settings.py).
        chaos_env["SAGA_BROKER_PORT"] = str(args.proxy_port)
    try:
        report, audit_text = run_chaos(args, kinds, run, chaos_env, proxy, report_path)
    finally:
        say("restoring the normal stack")
        if proxy is not None:
            proxy.terminate()
            proxy.wait(timeout=10)
        stack_up(base_env)
    print_report(report, audit_text)
    print(f"report: {report_path}")
    return 0 if passed(report) else 1


def passed(report: dict[str, Any]) -> bool:
    """A clean audit, every order terminal, nothing unroutable, and quiet in time."""
    lost = report["lost_events"]
    return (
        report["audit_exit_code"] == 0
        and not lost["orders_not_terminal"]
        and not lost["unroutable_messages"]
        and report["seconds_to_quiet"] >= 0
    )


def print_orders(report: dict[str, Any], title: str) -> None:
    """The head of a chaos report (also make cluster-chaos's): orders by path, faults by kind."""
    print(f"\n=== {title} ===")
    print(
        f"orders placed: {report['orders_placed']} over {report['duration_seconds']:.0f}s "
        f"(POST retries: {report['post_failures'].get('post_retried', 0)} "
        f"{report.get('post_answers_retried', '')}, "
        f"given up: {report['post_failures'].get('post_gave_up', 0)})"
    )
    print(f"{'path':<20} {'placed':>7}  outcomes (expected)")
    for path, placed in report["orders_by_path"].items():
        outcomes = ", ".join(f"{k} {v}" for k, v in sorted(report["outcomes_by_path"][path].items()))
        print(f"{path:<20} {placed:>7}  {outcomes}  ({report['expected_by_path'][path]})")
    print("faults injected: " + ", ".join(f"{k} {v}" for k, v in sorted(report["faults_injected"].items())))


def print_verdict(report: dict[str, Any], audit_text: str) -> None:
    """The end of a chaos report: what the faults cost, what was lost, and the audit."""
    print(
        f"cancelled by their deadline (a saga slowed down by the faults, then undone): "
        f"{report['cancelled_by_deadline']}"
    )
    print(f"time to quiescence: {report['seconds_to_quiet']}s")
    print(f"violations: {report['violations']}")
    print(f"lost events: {report['lost_events']}")
    print(f"duplicates absorbed by the inboxes: {report['duplicates_absorbed']:.0f}")
    print("\n--- audit ---\n" + audit_text.strip())


def print_report(report: dict[str, Any], audit_text: str) -> None:
    print_orders(report, "chaos report")
    if report.get("broker_unavailable_seconds"):
        print(
            f"RabbitMQ unavailable: {report['broker_unavailable_seconds']:.0f}s in all "
            f"({100 * report['broker_unavailable_seconds'] / report['duration_seconds']:.0f}% of the run)"
        )
    if report["proxy"]:
        print(
            f"network proxy: {report['proxy'].get('connections')} connections, "
            f"{report['proxy'].get('drops')} cut"
        )
    print_verdict(report, audit_text)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
