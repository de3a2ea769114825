"""`make cluster` for real: six hosts as network namespaces, a RabbitMQ cluster of three
nodes on quorum queues, PostgreSQL over the network, two app hosts, and `make
cluster-down` leaving nothing behind (issue 23). Run by `make test` after every other
suite, with `make up`'s stack stopped (the two use the same ports on 127.0.0.1).

The module brings the cluster up once (a fresh one: its data in var/cluster is purged
first) and takes it down at the end, checking that down removed every namespace, link
and process, also when a test failed.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from common.services import SERVICES
from scripts import cluster
from scripts.client import PORTS, Api
from tests.support import ROOT, poll
from tests.unavailable import ENDPOINTS

CLUSTER_KINDS = {"broker-kill", "broker-partition", "app-cut", "app-kill", "postgres"}


# The cluster runs with its defaults, not with the settings make test gives its own stack
# (short retry tiers and deadline, four inventory workers, traces to a local sink).
ENV = {key: value for key, value in os.environ.items() if not key.startswith(("SAGA_", "OTEL_"))}


def make(*args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(  # noqa: S603 - our own Makefile
        ["make", "-s", "-C", str(ROOT), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=ENV,
    )
    print(result.stdout[-4000:], result.stderr[-4000:], sep="\n")
    return result


def leftovers() -> dict[str, list[str]]:
    """What of the cluster exists on this machine: namespaces, links, processes, files."""
    links = [name for name in os.listdir("/sys/class/net") if name.startswith(("saga-", "sg-", "sgi-"))]
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False).stdout
    processes = []
    ours = os.readlink("/proc/self/ns/net")
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            elsewhere = os.readlink(f"/proc/{pid}/ns/net") != ours
        except OSError:
            continue
        # Ours by its files, or by name on another network (epmd names no file).
        erlang = elsewhere and command.split(" ")[0].rsplit("/", 1)[-1] in (
            "epmd",
            "beam.smp",
            "erl_child_setup",
        )
        if (str(cluster.CLUSTER) in command and "pytest" not in command) or erlang:
            processes.append(f"{pid} {command[:120]}")
    etc = [name for name in os.listdir("/etc/netns")] if os.path.isdir("/etc/netns") else []
    return {
        "namespaces": [line.split()[0] for line in names.splitlines() if line.startswith("saga-")],
        "links": links,
        "processes": processes,
        "etc_netns": [name for name in etc if name.startswith("saga-")],
    }


@pytest.fixture(scope="module")
def running_cluster():
    assert make("cluster-down", "ARGS=--purge").returncode == 0
    up = make("cluster")
    try:
        assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
        yield up.stdout
    finally:
        down = make("cluster-down")
        assert down.returncode == 0, down.stderr
        assert leftovers() == {"namespaces": [], "links": [], "processes": [], "etc_netns": []}
        again = make("cluster-down")  # harmless twice
        assert again.returncode == 0, again.stderr


def test_the_cluster_has_its_hosts_nodes_and_quorum_queues(running_cluster: str) -> None:
    for host in cluster.HOSTS:
        assert host in running_cluster  # printed, with its address
        assert cluster.address(host) in running_cluster
    nodes = cluster.management("nodes")
    assert sorted(n["name"] for n in nodes if n["running"]) == [f"rabbit@{h}" for h in cluster.RABBITS]
    queues = {q["name"]: q for q in cluster.management("queues/saga")}
    for service in ("order", "payment", "inventory", "shipping"):
        assert queues[f"{service}.events"]["type"] == "quorum"
        assert queues[f"{service}.events"]["arguments"]["x-dead-letter-strategy"] == "at-least-once"
    # Every host is on the private subnet only: no route out of it.
    for host in cluster.HOSTS:
        routes = subprocess.run(
            cluster.in_host(host, "ip", "route"), capture_output=True, text=True, check=True
        )
        assert (
            routes.stdout.strip()
            == f"{cluster.SUBNET}.0/24 dev eth0 proto kernel scope link src {cluster.address(host)}"
        )


def test_both_app_hosts_run_every_service_and_beat_runs_once(running_cluster: str) -> None:
    for host in cluster.APPS:
        status = cluster.ctl(host, "status", check=False)
        running = {line.split()[0] for line in status.splitlines() if "RUNNING" in line}
        for service in ("order", "payment", "inventory", "shipping"):
            assert {f"{service}-web", f"{service}-worker", f"{service}-relay"} <= running, (host, status)
        assert ("order-beat" in running) == (host == cluster.APPS[0]), status
        # Each process reaches PostgreSQL over the network and the broker nodes through the list.
        conf = cluster.conf_file(host).read_text()
        assert f'SAGA_DB_HOST="{cluster.address("saga-db")}"' in conf
        assert "SAGA_BROKER_HOST=" in conf
        assert all(cluster.address(r) in conf for r in cluster.RABBITS)
        # On quorum queues Celery's own delayed delivery is not set up (nor failing, CRITICAL).
        for log in (cluster.directory(host) / "log").glob("*-worker*.log"):
            assert "delayed delivery" not in log.read_text(), log


def test_make_demo_and_make_audit_work_against_the_cluster(running_cluster: str) -> None:
    demo = make("demo", timeout=300)
    assert demo.returncode == 0
    for path in ("success", "out of stock", "insufficient funds", "unserved country"):
        assert path in demo.stdout, demo.stdout[-2000:]
    assert "InventoryReleased" in demo.stdout
    assert "ShipmentScheduled" in demo.stdout
    audit = make("audit", timeout=300)
    assert audit.returncode == 0
    assert "OK: no violation" in audit.stdout


def test_the_saga_map_draws_every_service_through_the_gateway(running_cluster: str) -> None:
    """Each service's /api/flow/ sees workers on both app hosts; the Order admin's home asks
    the four from an app host (SAGA_SERVICE_API_URLS) and draws the demo's arrows."""
    api = Api()
    for service in SERVICES:
        report = poll(
            lambda s=service: api.get(s, "/api/flow/?window=1h", timeout=15).json(),
            lambda r: r["relay"]["alive"] and r["queues"]["events"]["consumers"] >= 2,
            timeout=60,
            what=f"{service}'s relay beating and a worker on each app host",
        )
        assert report["registry"]["service"] == service
    session = requests.Session()
    login = f"http://127.0.0.1:{PORTS['order']}/admin/login/?next=/admin/"
    form = session.get(login, timeout=15).text  # (each service has its own CSRF cookie name)
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form).group(1)
    session.post(
        login,
        data={"username": "admin", "password": "admin", "csrfmiddlewaretoken": token},
        headers={"Referer": login},
        timeout=15,
    )
    page = poll(
        lambda: session.get(f"http://127.0.0.1:{PORTS['order']}/admin/?window=1h", timeout=30).text,
        lambda text: 'id="edge_order_OrderPlaced_inventory" class="edge arrow"' in text,
        timeout=60,
        what="the demo's OrderPlaced on the map",
    )
    assert "does not answer" not in page
    for service in SERVICES:
        assert f'id="svc_{service}"' in page


def test_every_endpoint_answers_503_while_the_clusters_database_is_stopped(running_cluster: str) -> None:
    api = Api()
    cluster.stop_postgres_immediately()
    try:
        for service, requests in ENDPOINTS.items():
            for method, path, body in requests:
                headers = {"Idempotency-Key": "cluster-503"} if method == "POST" else {}
                response = (
                    api.get(service, path, timeout=15)
                    if method == "GET"
                    else api.post(service, path, json=body or {}, headers=headers, timeout=15)
                )
                assert response.status_code == 503, (
                    service,
                    method,
                    path,
                    response.status_code,
                    response.text,
                )
                assert response.headers["Retry-After"].isdigit()
                answer = response.json()
                assert answer["unavailable"] == "database", answer
                assert "Idempotency-Key" in answer["message"], answer
    finally:
        cluster.ctl("saga-db", "start", "postgres")
    deadline = time.monotonic() + 60
    while api.get("order", "/api/orders/", timeout=15).status_code != 200:  # crash recovery, then back
        assert time.monotonic() < deadline, "PostgreSQL did not come back"
        time.sleep(0.5)


def test_a_short_cluster_chaos_run_loses_nothing(running_cluster: str) -> None:
    report_file = ROOT / "test-artifacts" / "cluster-report.json"
    run = subprocess.run(  # noqa: S603 - our own script
        [sys.executable, str(ROOT / "scripts" / "cluster_chaos.py"), "--duration", "120", "--rate", "4",
         "--faults", ",".join(sorted(CLUSTER_KINDS)), "--seed", "20261206", "--report", str(report_file)],
        capture_output=True, text=True, timeout=1500, check=False, env=ENV,
    )  # fmt: skip
    print(run.stdout[-6000:])
    assert report_file.exists(), run.stdout[-3000:] + run.stderr[-3000:]
    report = json.loads(report_file.read_text())
    assert set(report["faults_injected"]) == CLUSTER_KINDS, report["faults_injected"]
    assert report["faults_failed"] == {}, [e for e in report["fault_log"] if "failed" in e["what"]]
    assert report["violations"] == 0, report["violation_samples"]
    assert report["lost_events"] == {"orders_not_terminal": 0, "unroutable_messages": 0}
    assert report["outcomes_by_path"]["success"].get("COMPLETED", 0) > 0, report["outcomes_by_path"]
    postgres = [entry for entry in report["fault_log"] if entry["kind"] == "postgres"]
    assert all(entry["post_while_down"]["status"] == 503 for entry in postgres), postgres
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
