#!/usr/bin/env python3
"""`make cluster`: the platform as on six machines, made of network namespaces on this one.

    scripts/cluster.py up | down [--purge] | status | address HOST | ctl HOST ARGS...
                       | rabbitmqctl HOST ARGS... | run HOST COMMAND... | kill HOST | boot HOST
                       | cut HOST | join HOST

Hosts (these names are the interface: operators and tests address hosts by them), each a
network namespace with its own address on one bridge, and no route anywhere else:

    saga-rabbit-1..3   a RabbitMQ node each, clustered (quorum queues, pause_minority)
    saga-db            PostgreSQL, one database per service, reached over the network
    saga-app-1..2      every service's web, worker and relay; order-beat and Flower on -1

Every host runs its own supervisord (its socket under var/cluster/<host>/run/). On this
machine's 127.0.0.1, as with `make up`, a gateway (HAProxy, under a supervisord of its
own) publishes the four APIs at 8001–8004 over both app hosts, Flower at 5555, and
RabbitMQ's AMQP port 5672 and management API 15672 over the three nodes.

Nothing here sends traffic anywhere but 127.0.0.1 and the addresses of the namespaces it
made; `down` removes every namespace, link and process it made (data stays in
var/cluster/ unless --purge).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from common.services import DEFAULT_PORTS, SERVICES  # noqa: E402 - plain data
from scripts import supervisor_conf as conf  # noqa: E402 - the programs, as make up writes them

CLUSTER = ROOT / "var" / "cluster"
RUNNING = CLUSTER / "running.json"  # written when up, removed by down: make up checks it
SUBNET = os.environ.get("SAGA_CLUSTER_SUBNET", "10.231.7")  # a private /24, made and removed here
BRIDGE = "saga-br0"
HOSTS = {  # host → last byte of its address
    "saga-rabbit-1": 11,
    "saga-rabbit-2": 12,
    "saga-rabbit-3": 13,
    "saga-db": 31,
    "saga-app-1": 21,
    "saga-app-2": 22,
}
RABBITS = [host for host in HOSTS if host.startswith("saga-rabbit-")]
APPS = [host for host in HOSTS if host.startswith("saga-app-")]
GATEWAY = CLUSTER / "gateway"  # the root namespace's supervisord: HAProxy
PG_BIN = Path(f"/usr/lib/postgresql/{os.environ.get('SAGA_PG_VERSION', '15')}/bin")
AMQP, MGMT, PG_PORT, FLOWER = 5672, 15672, 5432, 5555
SUPERVISORD, SUPERVISORCTL = conf.VENV / "bin" / "supervisord", conf.VENV / "bin" / "supervisorctl"


def say(message: str) -> None:
    print(f"\033[1m==> {message}\033[0m", flush=True)


class ClusterError(RuntimeError):
    pass


def run(command: Sequence[str], *, check: bool = True, timeout: float = 120, quiet: bool = True) -> str:
    result = subprocess.run(  # noqa: S603 - our own commands
        list(command), capture_output=quiet, text=True, timeout=timeout, check=False
    )
    if check and result.returncode != 0:
        output = f"{result.stdout or ''}{result.stderr or ''}".strip()
        raise ClusterError(f"{' '.join(command)} failed ({result.returncode}): {output[-2000:]}")
    return result.stdout or ""


def address(host: str) -> str:
    return f"{SUBNET}.{HOSTS[host]}"


def in_host(host: str, *command: str) -> list[str]:
    """``command`` run on ``host``: inside its network namespace, where /etc/hosts is the
    cluster's (``ip netns exec`` mounts /etc/netns/<host>/hosts over it)."""
    return ["ip", "netns", "exec", host, *command]


def directory(host: str) -> Path:
    return CLUSTER / host


def namespaces() -> list[str]:
    listed = run(["ip", "netns", "list"], check=False)
    return [line.split()[0] for line in listed.splitlines() if line.startswith("saga-")]


def link_names(host: str) -> tuple[str, str]:
    """The veth pair of ``host``: its end on the bridge (root namespace), its end inside."""
    short = host.removeprefix("saga-")
    return f"sg-{short}", f"sgi-{short}"


# --- the network -------------------------------------------------------------------------


def make_network() -> None:
    routes = run(["ip", "-o", "route", "show", f"{SUBNET}.0/24"], check=False)
    if routes and BRIDGE not in routes:
        raise ClusterError(
            f"{SUBNET}.0/24 is already routed here ({routes.strip()}); set SAGA_CLUSTER_SUBNET"
        )
    if not Path(f"/sys/class/net/{BRIDGE}").exists():
        run(["ip", "link", "add", BRIDGE, "type", "bridge"])
        run(["ip", "addr", "add", f"{SUBNET}.1/24", "dev", BRIDGE])
    run(["ip", "link", "set", BRIDGE, "up"])
    hosts_file = "127.0.0.1 localhost\n" + "".join(f"{address(h)} {h}\n" for h in HOSTS)
    existing = set(namespaces())
    for host in HOSTS:
        etc = Path("/etc/netns") / host
        etc.mkdir(parents=True, exist_ok=True)
        (etc / "hosts").write_text(hosts_file)
        outside, inside = link_names(host)
        if host not in existing:
            run(["ip", "netns", "add", host])
        if not Path(f"/sys/class/net/{outside}").exists():
            run(["ip", "link", "add", outside, "type", "veth", "peer", "name", inside])
            run(["ip", "link", "set", inside, "netns", host])
            run(in_host(host, "ip", "link", "set", inside, "name", "eth0"))
            run(in_host(host, "ip", "addr", "add", f"{address(host)}/24", "dev", "eth0"))
            run(["ip", "link", "set", outside, "master", BRIDGE])
        run(["ip", "link", "set", outside, "up"])
        run(in_host(host, "ip", "link", "set", "lo", "up"))
        run(in_host(host, "ip", "link", "set", "eth0", "up"))


def cut(host: str) -> None:
    """Take ``host`` off the network (its link down), its processes alive: a partition."""
    run(["ip", "link", "set", link_names(host)[0], "down"])


def join(host: str) -> None:
    run(["ip", "link", "set", link_names(host)[0], "up"])


# --- supervisord per host ----------------------------------------------------------------


def conf_file(host: str) -> Path:
    return (GATEWAY if host == "gateway" else directory(host)) / "supervisord.conf"


def ctl(host: str, *args: str, check: bool = True, timeout: float = 120) -> str:
    return run([str(SUPERVISORCTL), "-c", str(conf_file(host)), *args], check=check, timeout=timeout)


def supervisord_up(host: str) -> bool:
    pidfile = conf_file(host).parent / "run" / "supervisord.pid"
    try:
        os.kill(int(pidfile.read_text()), 0)
    except (OSError, ValueError):
        return False
    return True


def boot(host: str) -> None:
    """Start ``host``'s supervisord (and so its programs), as a machine booting does."""
    if supervisord_up(host):
        return
    command = [str(SUPERVISORD), "-c", str(conf_file(host))]
    run(command if host == "gateway" else in_host(host, *command))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if ctl(host, "pid", check=False).strip().isdigit():
            return
        time.sleep(0.3)
    raise ClusterError(
        f"supervisord of {host} did not start; see {conf_file(host).parent}/log/supervisord.log"
    )


def pids_of(host: str) -> list[int]:
    return [int(p) for p in run(["ip", "netns", "pids", host], check=False).split()]


def send(pids: list[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def kill(host: str) -> int:
    """SIGKILL every process on ``host`` (a machine losing power); how many."""
    pids = pids_of(host)
    send(pids, signal.SIGKILL)
    return len(pids)


def shutdown(host: str) -> None:
    """Stop ``host``'s programs through its supervisord, then whatever is left on it."""
    if supervisord_up(host):
        ctl(host, "shutdown", check=False, timeout=180)
        pidfile = conf_file(host).parent / "run" / "supervisord.pid"
        deadline = time.monotonic() + 90
        while supervisord_up(host) and time.monotonic() < deadline:
            time.sleep(0.5)
        if host == "gateway" and supervisord_up(host):
            os.kill(int(pidfile.read_text()), signal.SIGKILL)
    if host != "gateway" and host in namespaces():
        # e.g. epmd, which RabbitMQ starts detached from its supervisor.
        for sig in (signal.SIGTERM, signal.SIGKILL):
            send(pids_of(host), sig)
            deadline = time.monotonic() + 10
            while pids_of(host) and time.monotonic() < deadline:
                time.sleep(0.2)


def host_dirs(base: Path) -> None:
    for sub in ("log", "run"):
        (base / sub).mkdir(parents=True, exist_ok=True)


# --- RabbitMQ nodes ------------------------------------------------------------------------


def nodename(host: str) -> str:
    return f"rabbit@{host}"


def node_env(host: str) -> dict[str, str]:
    base = directory(host)
    return conf.rabbitmq_env(base, nodename=nodename(host), address=address(host), home=str(base / "home"))


def rabbitmqctl_command(host: str, tool: str = "rabbitmqctl") -> list[str]:
    """A RabbitMQ command-line tool (rabbitmqctl, rabbitmq-queues) for the node on ``host``."""
    environment = (f"{k}={v}" for k, v in node_env(host).items())
    return in_host(host, "env", *environment, f"/usr/lib/rabbitmq/bin/{tool}", "-n", nodename(host))


def rabbitmq_files(host: str, cookie: str) -> None:
    base = directory(host)
    host_dirs(base)
    rabbit = base / "rabbitmq"
    (rabbit / "mnesia").mkdir(parents=True, exist_ok=True)
    (base / "log" / "rabbitmq").mkdir(parents=True, exist_ok=True)
    home = base / "home"
    home.mkdir(exist_ok=True)
    cookie_file = home / ".erlang.cookie"
    if not cookie_file.exists() or cookie_file.read_text() != cookie:
        cookie_file.unlink(missing_ok=True)
        cookie_file.write_text(cookie)
    cookie_file.chmod(0o400)
    peers = "".join(
        f"cluster_formation.classic_config.nodes.{i} = {nodename(h)}\n" for i, h in enumerate(RABBITS, 1)
    )
    (rabbit / "rabbitmq.conf").write_text(
        f"""# generated by scripts/cluster.py — node {nodename(host)} of make cluster
listeners.tcp.default = {address(host)}:{AMQP}
management.tcp.ip = {address(host)}
management.tcp.port = {MGMT}
loopback_users = none
log.file.level = warning
# Peer discovery from this fixed list: a blank node joins the listed node that is up.
cluster_formation.peer_discovery_backend = classic_config
{peers}# A node cut off from the majority stops serving rather than diverging: quorum queues
# need a majority anyway, and clients fail over to a node that has one (docs/cluster.md).
cluster_partition_handling = pause_minority
# Three nodes share one machine's memory with everything else.
vm_memory_high_watermark.relative = 0.15
# Quorum queue leaders spread over the nodes, not all on the node the declaring client used.
queue_leader_locator = balanced
"""
    )
    (rabbit / "enabled_plugins").write_text("[rabbitmq_management].\n")
    octets = ",".join(address(host).split("."))
    # net_ticktime 15 s (Erlang's default is 60): the nodes of the majority notice a node
    # cut off after 11–19 s, not 45–75 s, and hand its consumers' messages to others.
    (rabbit / "advanced.config").write_text(
        f"[{{kernel, [{{inet_dist_use_interface, {{{octets}}}}}, {{net_ticktime, 15}}]}}].\n"
    )
    (rabbit / "rabbitmq-env.conf").write_text("")
    text = conf.header(conf.Host(var=base)) + conf.program(
        "rabbitmq",
        "/usr/lib/rabbitmq/bin/rabbitmq-server",
        host=conf.Host(var=base),
        autostart=True,
        extra=f"environment={conf.env_line(node_env(host))}\nstopwaitsecs=60\n",
    )
    conf_file(host).write_text(text)


def cookie() -> str:
    path = CLUSTER / "erlang.cookie"
    if not path.exists():
        path.write_text(secrets.token_hex(20).upper())
        path.chmod(0o400)
    return path.read_text().strip()


def await_node(host: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = subprocess.run(  # noqa: S603
            [*rabbitmqctl_command(host), "-q", "await_startup", "--timeout", "10"],
            capture_output=True,
            timeout=30,
            check=False,
        )
        if status.returncode == 0:
            return
        time.sleep(1)
    raise ClusterError(f"RabbitMQ on {host} did not start; see {directory(host)}/log/")


def running_nodes(host: str) -> list[str]:
    out = run(
        [*rabbitmqctl_command(host), "-q", "cluster_status", "--formatter", "json"], check=False, timeout=60
    )
    try:
        return sorted(json.loads(out).get("running_nodes", []))
    except json.JSONDecodeError:
        return []


def start_rabbits() -> None:
    fresh = [h for h in RABBITS if not any((directory(h) / "rabbitmq" / "mnesia").iterdir())]
    # A blank cluster forms around its first node: start it alone, then the others join it.
    # Nodes that were clustered before start together (each waits for its peers' tables).
    first = [RABBITS[0]] if len(fresh) == len(RABBITS) else []
    for host in first:
        boot(host)
        await_node(host)
    for host in RABBITS:
        boot(host)
    for host in RABBITS:
        await_node(host)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        nodes = running_nodes(RABBITS[0])
        if len(nodes) == len(RABBITS):
            return
        time.sleep(2)
    raise ClusterError(f"the RabbitMQ cluster has {running_nodes(RABBITS[0])} running, not all of {RABBITS}")


def management(path: str) -> Any:
    """GET ``/api/<path>`` of RabbitMQ's management API through the gateway, as the
    development administrator saga/saga; the JSON it answers."""
    request = urllib.request.Request(f"http://127.0.0.1:{MGMT}/api/{path}")  # noqa: S310 - our gateway
    request.add_header("Authorization", "Basic " + base64.b64encode(b"saga:saga").decode())
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        return json.load(response)


def rebalance() -> None:
    """Spread the quorum queues' leaders over the running nodes: a node that restarts gets
    none back by itself, and one node leading every queue makes its loss the costly one."""
    command = [
        *rabbitmqctl_command(RABBITS[0], "rabbitmq-queues"),
        "rebalance",
        "quorum",
        "--vhost-pattern",
        "^saga$",
    ]
    try:
        run(command, timeout=180)
    except (ClusterError, subprocess.TimeoutExpired) as exc:
        print(f"warning: could not rebalance the queue leaders: {exc}", file=sys.stderr)


def broker_users() -> None:
    rabbitmqctl = f"{conf.VENV / 'bin' / 'python'} {Path(__file__).resolve()} rabbitmqctl {RABBITS[0]}"
    env = {**os.environ, "SAGA_RABBITMQCTL": rabbitmqctl}
    result = subprocess.run(  # noqa: S603
        [str(ROOT / "scripts" / "stack.sh"), "broker-users"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise ClusterError(f"creating the broker users failed: {result.stdout}{result.stderr}")


# --- PostgreSQL on saga-db -------------------------------------------------------------------


def postgres_files() -> Path:
    base = directory("saga-db")
    host_dirs(base)
    data = base / "pgdata"
    sockets = base / "socket"
    sockets.mkdir(exist_ok=True)
    shutil.chown(sockets, "postgres", "postgres")
    if not (data / "PG_VERSION").exists():
        say("initialising PostgreSQL's data directory on saga-db")
        data.mkdir(exist_ok=True)
        shutil.chown(data, "postgres", "postgres")
        data.chmod(0o700)
        run(["runuser", "-u", "postgres", "--", str(PG_BIN / "initdb"), "-D", str(data), "-A", "peer",
             "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8"], timeout=300)  # fmt: skip
        with (data / "pg_hba.conf").open("a") as hba:
            hba.write(
                f"# make cluster: the app hosts, over the network\nhost all all {SUBNET}.0/24 scram-sha-256\n"
            )
    options = {
        "listen_addresses": address("saga-db"),
        "port": str(PG_PORT),
        "unix_socket_directories": str(sockets),
        "max_connections": "300",
        "shared_buffers": "256MB",
    }
    flags = " ".join(f"-c {key}={value}" for key, value in options.items())
    host = conf.Host(var=base)
    text = conf.header(host) + conf.program(
        "postgres",
        f"{PG_BIN}/postgres -D {data} {flags}",
        host=host,
        autostart=True,
        # Fast shutdown on stop; no restart of its own (cluster-chaos stops it -m immediate
        # and starts it again, as an operator would after a crash).
        extra="user=postgres\nstopsignal=INT\nstopwaitsecs=60\nautorestart=false\n",
    )
    conf_file("saga-db").write_text(text)
    return sockets


def psql(sockets: Path, query: str, *, file: Path | None = None) -> str:
    command = ["runuser", "-u", "postgres", "--", "psql", "-h", str(sockets), "-p", str(PG_PORT), "-qAt"]
    command += ["-f", str(file)] if file else ["-c", query]
    return run(command)


def start_postgres() -> None:
    sockets = postgres_files()
    boot("saga-db")
    ctl("saga-db", "start", "postgres", check=False)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            psql(sockets, "select 1")
            break
        except ClusterError:
            time.sleep(0.5)
    else:
        raise ClusterError("PostgreSQL on saga-db did not accept connections; see var/cluster/saga-db/log/")
    if not psql(sockets, "select 1 from pg_database where datname = 'saga_order'").strip():
        say("creating the services' roles and databases (deploy/postgres-init.sql)")
        init = directory("saga-db") / "postgres-init.sql"
        shutil.copy(ROOT / "deploy" / "postgres-init.sql", init)
        init.chmod(0o644)
        psql(sockets, "", file=init)


def stop_postgres_immediately() -> None:
    """``pg_ctl stop -m immediate`` on saga-db: PostgreSQL's crash, recovered at its next start."""
    data = directory("saga-db") / "pgdata"
    run(in_host("saga-db", "runuser", "-u", "postgres", "--", str(PG_BIN / "pg_ctl"), "-D", str(data),
                "stop", "-m", "immediate"))  # fmt: skip


# --- the app hosts and the gateway ---------------------------------------------------------


def app_environment(host: str) -> dict[str, str]:
    """What a service process on an app host is told: the database over the network, the
    three broker nodes (this host's list starts at a different node), quorum queues."""
    index = APPS.index(host)
    nodes = [address(h) for h in RABBITS]
    nodes = nodes[index:] + nodes[:index]
    return {
        "SAGA_DB_HOST": address("saga-db"),
        "SAGA_DB_PORT": str(PG_PORT),
        "SAGA_BROKER_HOST": ",".join(nodes),
        "SAGA_BROKER_PORT": str(AMQP),
        "SAGA_QUEUE_TYPE": "quorum",
        # Through the gateway the conf.Host is 127.0.0.1; asked directly, the host's own address.
        "SAGA_ALLOWED_HOSTS": f"127.0.0.1,localhost,{address(host)}",
        "SAGA_CLUSTER_HOST": host,
        # The saga map asks every service for its figures: this host's own processes.
        "SAGA_SERVICE_API_URLS": ",".join(
            f"{svc}=http://{address(host)}:{p}" for svc, p in conf.SERVICES.items()
        ),
    }


def app_files(host: str) -> None:
    base = directory(host)
    host_dirs(base)
    for service in SERVICES:
        (base / "prometheus" / service).mkdir(parents=True, exist_ok=True)
    layout = conf.Host(
        var=base,
        bind=address(host),
        node_host=host,
        environment=app_environment(host),
        beat=host == APPS[0],
        flower=host == APPS[0],
        autostart=True,
    )
    admin = ";".join(f"amqp://saga:saga@{address(h)}:{AMQP}/saga" for h in RABBITS)
    programs = conf.service_programs(
        layout, admin_broker=admin, broker_api=f"http://saga:saga@{address(RABBITS[0])}:{MGMT}/api/"
    )
    conf_file(host).write_text(
        conf.header(layout, {"SAGA_FAULTS_FILE": str(CLUSTER / "faults")}) + "".join(programs)
    )


def prepare_services() -> None:
    say("migrate, admin user and topology (quorum queues) of each service, from saga-app-1")
    host_dirs(directory(APPS[0]))
    env = [f"{k}={v}" for k, v in app_environment(APPS[0]).items()]
    python = str(conf.VENV / "bin" / "python")
    procs = {
        service: subprocess.Popen(  # noqa: S603
            in_host(APPS[0], "env", *env, python, str(ROOT / "manage.py"), service, "prepare"),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for service in SERVICES
    }
    failed = []
    for service, proc in procs.items():
        output, _ = proc.communicate(timeout=600)
        (directory(APPS[0]) / "log" / f"prepare-{service}.log").write_text(output)
        if proc.returncode != 0:
            failed.append(f"{service}:\n{output[-1500:]}")
    if failed:
        raise ClusterError("preparing a service failed\n" + "\n".join(failed))
    run([python, str(ROOT / "manage.py"), "order", "collectstatic", "--noinput", "-v", "0"])


def gateway_files() -> None:
    host_dirs(GATEWAY)
    apps = [(h, address(h)) for h in APPS]
    rabbits = [(h, address(h)) for h in RABBITS]

    def section(name: str, port: int, servers: list[tuple[str, str]], target: int, mode: str = "tcp") -> str:
        lines = [f"listen {name}", f"    bind 127.0.0.1:{port}", f"    mode {mode}", "    balance roundrobin"]
        lines += [f"    server {h} {a}:{target} check inter 1s fall 2 rise 2" for h, a in servers]
        return "\n".join(lines) + "\n\n"

    config = """# generated by scripts/cluster.py — the gateway of make cluster, on 127.0.0.1
global
    maxconn 8192
    log stdout format raw local0 notice

defaults
    log global
    option redispatch
    retries 3
    timeout connect 1s
    timeout client 1h
    timeout server 1h
    timeout check 1s

"""
    for service, port in DEFAULT_PORTS.items():
        config += section(f"{service}-api", port, apps, port, mode="http")
    config += section("flower", FLOWER, apps[:1], FLOWER, mode="http")
    config += section("rabbitmq-management", MGMT, rabbits, MGMT, mode="http")
    config += section("amqp", AMQP, rabbits, AMQP)
    (GATEWAY / "haproxy.cfg").write_text(config)
    host = conf.Host(var=GATEWAY)
    conf_file("gateway").write_text(
        conf.header(host)
        + conf.program(
            "gateway",
            f"/usr/sbin/haproxy -db -f {GATEWAY / 'haproxy.cfg'}",
            host=host,
            autostart=True,
            extra="",
        )
    )


def wait_healthy(base: str, timeout: float) -> None:
    ports = [str(port) for port in DEFAULT_PORTS.values()]
    run([str(conf.VENV / "bin" / "python"), str(ROOT / "scripts" / "wait_healthy.py"), "--host", base,
         "--timeout", str(timeout), *ports], timeout=timeout + 30)  # fmt: skip


# --- commands ------------------------------------------------------------------------------


def stack_running() -> bool:
    return (
        subprocess.run(
            [str(ROOT / "scripts" / "stack.sh"), "running"], capture_output=True, check=False
        ).returncode
        == 0
    )  # noqa: S603


def up() -> None:
    started = time.monotonic()
    if stack_running():
        raise ClusterError("the stack of make up is running on the same ports; make down first")
    stack = str(ROOT / "scripts" / "stack.sh")
    run([stack, "deps"], quiet=False, timeout=900)
    run(
        [stack, "install", "rabbitmq-server", "/usr/lib/rabbitmq/bin/rabbitmq-server"],
        quiet=False,
        timeout=900,
    )
    run([stack, "install", "haproxy", "/usr/sbin/haproxy"], quiet=False, timeout=900)
    run([stack, "install", "graphviz", "/usr/bin/dot"], quiet=False, timeout=900)  # the saga map
    if shutil.which("ip") is None:  # the hosts are made with ip netns and veth links
        run([stack, "install", "iproute2", "/usr/bin/ip"], quiet=False, timeout=900)
    CLUSTER.mkdir(parents=True, exist_ok=True)
    RUNNING.write_text(json.dumps({"hosts": {h: address(h) for h in HOSTS}, "since": time.time()}) + "\n")
    say(f"network: bridge {BRIDGE} {SUBNET}.0/24, hosts {', '.join(HOSTS)}")
    make_network()
    say("PostgreSQL on saga-db")
    start_postgres()
    say("RabbitMQ on " + ", ".join(RABBITS))
    secret = cookie()
    for host in RABBITS:
        rabbitmq_files(host, secret)
    start_rabbits()
    broker_users()
    prepare_services()
    for host in APPS:
        say(f"services on {host}")
        app_files(host)
        boot(host)
        ctl(host, "update", check=False)
        ctl(host, "start", "all", check=False, timeout=300)
    say("spreading the queues' leaders over the three nodes")
    rebalance()
    say("gateway on 127.0.0.1 (HAProxy)")
    gateway_files()
    boot("gateway")
    ctl("gateway", "update", check=False)
    ctl("gateway", "start", "all", check=False)
    for host in APPS:
        wait_healthy(address(host), 180)
    wait_healthy("127.0.0.1", 60)
    print_status(time.monotonic() - started)


def print_status(took: float | None = None) -> None:
    print()
    print("The order saga platform runs on a cluster" + (f" ({took:.0f}s)." if took is not None else "."))
    print(f"  {'host':<15} {'address':<15} runs")
    for host in HOSTS:
        programs = ctl(host, "status", check=False) if supervisord_up(host) else ""
        names = sorted({line.split()[0].split(":")[0] for line in programs.splitlines() if "RUNNING" in line})
        print(f"  {host:<15} {address(host):<15} {', '.join(names) or '(down)'}")
    print(f"  RabbitMQ nodes running: {', '.join(running_nodes(RABBITS[0])) or '?'}")
    print("  On 127.0.0.1 (the gateway, balancing over saga-app-1 and saga-app-2):")
    for service, port in DEFAULT_PORTS.items():
        print(f"    {service:<10} http://127.0.0.1:{port}/api/   admin http://127.0.0.1:{port}/admin/")
    print(f"    Flower     http://127.0.0.1:{FLOWER}/")
    print(f"    RabbitMQ   amqp://saga:saga@127.0.0.1:{AMQP}/saga   management http://127.0.0.1:{MGMT}/")
    print("  Hosts: make cluster-ctl HOST=saga-app-1 ARGS=status   logs in var/cluster/<host>/log/")


def down(purge: bool) -> None:
    say("stopping the gateway")
    shutdown("gateway")
    for host in [*APPS, *RABBITS, "saga-db"]:
        if host in namespaces() or supervisord_up(host):
            say(f"stopping {host}")
            shutdown(host)
    for host in namespaces():
        if host in HOSTS:
            run(["ip", "netns", "delete", host], check=False)
    for host in HOSTS:
        outside = link_names(host)[0]
        if Path(f"/sys/class/net/{outside}").exists():
            run(["ip", "link", "delete", outside], check=False)
        shutil.rmtree(Path("/etc/netns") / host, ignore_errors=True)
    if Path(f"/sys/class/net/{BRIDGE}").exists():
        run(["ip", "link", "delete", BRIDGE])
    RUNNING.unlink(missing_ok=True)
    if purge:
        say("removing the cluster's data (var/cluster)")
        shutil.rmtree(CLUSTER, ignore_errors=True)
    say("the cluster is down: no namespace, link or process of it is left")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("up")
    down_parser = sub.add_parser("down")
    down_parser.add_argument("--purge", action="store_true", help="also remove the data in var/cluster/")
    sub.add_parser("status")
    for name in ("address", "kill", "boot", "cut", "join"):
        sub.add_parser(name).add_argument("host", choices=list(HOSTS))
    for name in ("ctl", "rabbitmqctl", "run"):
        p = sub.add_parser(name)
        p.add_argument("host", choices=[*HOSTS, "gateway"] if name == "ctl" else list(HOSTS))
        p.add_argument("args", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    if os.geteuid() != 0 and args.command not in ("address",):
        parser.error("network namespaces need root")
    try:
        if args.command == "up":
            up()
        elif args.command == "down":
            down(args.purge)
        elif args.command == "status":
            if not RUNNING.exists():
                print("the cluster is not running (make cluster)")
                return 1
            print_status()
        elif args.command == "address":
            if not RUNNING.exists():
                return 1
            print(address(args.host))
        elif args.command == "ctl":
            return subprocess.run(
                [str(SUPERVISORCTL), "-c", str(conf_file(args.host)), *args.args], check=False
            ).returncode  # noqa: S603
        elif args.command == "rabbitmqctl":
            return subprocess.run([*rabbitmqctl_command(args.host), *args.args], check=False).returncode  # noqa: S603
        elif args.command == "run":
            return subprocess.run(in_host(args.host, *args.args), check=False).returncode  # noqa: S603
        elif args.command == "kill":
            print(f"killed {kill(args.host)} processes on {args.host}")
        elif args.command == "boot":
            boot(args.host)
        elif args.command == "cut":
            cut(args.host)
        elif args.command == "join":
            join(args.host)
    except ClusterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
