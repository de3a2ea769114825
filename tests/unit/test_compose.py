"""compose.yaml runs the same system as the local stack (scripts/supervisor_conf.py), on a cluster.

The supervisord configuration that ``make up`` writes is the reference: every
program has a compose service of the same name (RabbitMQ: one per node of the
cluster), runs the same command (apart from where it binds and what it is called),
and the APIs and Flower are published on the ports the local stack listens on (the
APIs through the gateway, deploy/gateway/nginx.conf, since their web servers are
replicated). On top of that, compose.yaml and deploy/ must describe a working cluster:
three RabbitMQ nodes with one cookie and the peer-discovery config, every application
container on quorum queues with a broker URL that fails over across the nodes,
replicas, Prometheus scraping every web, worker and relay replica, and alert rules on
metrics the code defines. Plain pytest and PyYAML: no Django, no Docker.

Each check is a function of the parsed files and the supervisor programs, so the
tests at the bottom can feed it a broken copy and see it fail.
"""

from __future__ import annotations

import copy
import inspect
import os
import re
import shlex
from configparser import RawConfigParser
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml

from common.services import SERVICES
from tests.support import load_script

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "compose.yaml"
POSTGRES_INIT = ROOT / "deploy" / "postgres-init.sql"
GATEWAY_CONF = ROOT / "deploy" / "gateway" / "nginx.conf"
RABBITMQ_CONF = ROOT / "deploy" / "rabbitmq" / "rabbitmq.conf"
PROMETHEUS_CONF = ROOT / "deploy" / "prometheus" / "prometheus.yml"
ALERTS_FILE = ROOT / "deploy" / "prometheus" / "alerts.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
# Where the code defines its Prometheus metrics (and reads its environment).
METRICS_MODULES = [ROOT / "common" / "observability" / "metrics.py", *sorted(ROOT.glob("*_svc/*/metrics.py"))]
CODE_FILES = [
    *sorted((ROOT / "common").rglob("*.py")),
    *sorted(ROOT.glob("*_svc/**/*.py")),
    ROOT / "deploy" / "docker-entrypoint.sh",
]

# Compose services that have no supervisor program: the database (the local stack
# uses the machine's PostgreSQL), the one-shot preparation job (scripts/stack.sh), the
# gateway in front of the replicated web servers, and Prometheus.
COMPOSE_ONLY = {"postgres", "migrate", "gateway", "prometheus"}
# Supervisor programs that compose runs as a cluster of <program>-1, <program>-2, ...
CLUSTERED = {"rabbitmq"}
RABBITMQ_NODES = 3
# The alerts issue 8 asks for, each with the metric its expression must use.
REQUIRED_ALERTS = {
    "SagaParkedMessages": "saga_parked_messages",
    "SagaStuck": "saga_stuck_sagas",
    "SagaOutboxLag": "saga_outbox_oldest_unpublished_seconds",
    "SagaWorkerDown": "up",
}
PROMETHEUS_OWN_METRICS = {"up"}
# Roles replicated on the cluster (at least two containers each) and roles run exactly once.
REPLICATED_ROLES = ("web", "worker")
SINGLETONS = {"order-beat": "the deadline sweep: each beat would send every sweep"}
# Options whose values legitimately differ between the two: where a server binds,
# the worker's node name, the broker's host.
# options whose value is where things live in one deployment (bind address, node name, beat schedule file)
PER_DEPLOYMENT_OPTIONS = {
    "-b",
    "--bind",
    "-n",
    "--hostname",
    "--broker",
    "--address",
    "--broker_api",
    "-s",
    "-c",
}
PREPARATION_COMMANDS = ("migrate --noinput", "ensure_admin", "declare_topology")

Compose = dict[str, Any]
Programs = dict[str, list[str]]  # supervisor program name -> its command's argv


@dataclass
class Deployment:
    """compose.yaml and the deploy/ files it mounts, parsed."""

    compose: Compose
    gateway: str  # deploy/gateway/nginx.conf
    rabbitmq_conf: str  # deploy/rabbitmq/rabbitmq.conf
    prometheus: dict[str, Any]  # deploy/prometheus/prometheus.yml
    alerts: dict[str, Any]  # deploy/prometheus/alerts.yml


# ---------------------------------------------------------------- loading


def parse_programs(conf_text: str) -> Programs:
    """``[program:NAME]`` sections of a supervisord config -> {NAME: argv}."""
    parser = RawConfigParser(strict=False)  # strict=False: a program may repeat an option
    parser.read_string(conf_text)
    programs = {}
    for section in parser.sections():
        if section.startswith("program:"):
            programs[section.removeprefix("program:")] = shlex.split(parser.get(section, "command"))
    return programs


_VARIABLE = re.compile(r"\$\$|\$\{(\w+)(?::?[-?]([^}]*))?\}|\$(\w+)")


def interpolate(value: Any) -> Any:
    """Resolve ``${VAR:-default}`` and ``$$`` as compose does with none of the variables set."""
    if isinstance(value, str):
        return _VARIABLE.sub(lambda m: "$" if m.group(0) == "$$" else (m.group(2) or ""), value)
    if isinstance(value, dict):
        return {key: interpolate(item) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item) for item in value]
    return value


def load_compose(path: Path = COMPOSE_FILE) -> Compose:
    compose = yaml.safe_load(path.read_text())
    assert isinstance(compose, dict), f"{path.name}: not a YAML mapping"
    assert isinstance(compose.get("services"), dict), f"{path.name}: no services mapping"
    return interpolate(compose)


def load_yaml_mapping(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict), f"{path.relative_to(ROOT)}: not a YAML mapping"
    return data


def load_deployment() -> Deployment:
    return Deployment(
        compose=load_compose(),
        gateway=GATEWAY_CONF.read_text(),
        rabbitmq_conf=RABBITMQ_CONF.read_text(),
        prometheus=load_yaml_mapping(PROMETHEUS_CONF),
        alerts=load_yaml_mapping(ALERTS_FILE),
    )


def defined_metrics(paths: list[Path] = METRICS_MODULES) -> set[str]:
    """The series names the code's metrics expose (a Counter "x" is x_total, a Histogram x_bucket...)."""
    names: set[str] = set()
    pattern = re.compile(
        r"\b(Counter|Gauge|Histogram|Summary|GaugeMetricFamily|CounterMetricFamily)\(\s*\"([a-zA-Z_:][\w:]*)\""
    )
    for path in paths:
        for kind, name in pattern.findall(path.read_text()):
            if kind.startswith("Counter"):
                base = name.removesuffix("_total")
                names |= {f"{base}_total", f"{base}_created"}
            elif kind in {"Histogram", "Summary"}:
                names |= {name, f"{name}_sum", f"{name}_count", f"{name}_created"}
                names |= {f"{name}_bucket"} if kind == "Histogram" else set()
            else:
                names.add(name)
    return names


# ---------------------------------------------------------------- helpers


def cluster_nodes(compose: Compose, program: str) -> list[str]:
    """The compose services ``<program>-1``, ``<program>-2`` ... of a clustered program, in order."""
    nodes = [name for name in compose["services"] if re.fullmatch(rf"{re.escape(program)}-\d+", name)]
    return sorted(nodes, key=lambda name: int(name.rpartition("-")[2]))


def replicas(service: dict[str, Any]) -> int:
    return int(((service.get("deploy") or {}).get("replicas")) or 1)


def volume_mounts(service: dict[str, Any]) -> list[tuple[str, str]]:
    """[(source, target)] of a compose service's volumes (short or long syntax)."""
    mounts = []
    for volume in service.get("volumes") or []:
        if isinstance(volume, dict):
            mounts.append((str(volume.get("source", "")), str(volume.get("target", ""))))
        else:
            source, _, rest = str(volume).partition(":")
            mounts.append((source, rest.partition(":")[0]))
    return mounts


def mounted_at(service: dict[str, Any], repo_file: Path) -> list[str]:
    """Where a file of this repository is bind-mounted in a service's containers."""
    relative = str(repo_file.relative_to(ROOT))
    return [target for source, target in volume_mounts(service) if source.removeprefix("./") == relative]


def broker_urls(value: str) -> list[str]:
    """The ';'-separated failover list kombu accepts for one broker URL."""
    return [url.strip() for url in value.split(";") if url.strip()]


def gateway_routes(conf: str) -> dict[int, tuple[str, int]]:
    """deploy/gateway/nginx.conf: {listen port: (upstream host, upstream port)} of each server."""
    routes: dict[int, tuple[str, int]] = {}
    for block in re.split(r"\bserver\s*\{", conf)[1:]:
        listen = re.search(r"\blisten\s+(\d+)\s*;", block)
        upstream = re.search(r"\bset\s+\$web\s+([\w.-]+):(\d+)\s*;", block)
        assert listen, f"{GATEWAY_CONF.name}: a server without 'listen PORT;'"
        assert upstream, f"{GATEWAY_CONF.name}: the server on {listen.group(1)} has no 'set $web HOST:PORT;'"
        assert re.search(r"\bproxy_pass\s+http://\$web\s*;", block), (
            f"{GATEWAY_CONF.name}: the server on {listen.group(1)} does not proxy_pass to http://$web"
        )
        routes[int(listen.group(1))] = (upstream.group(1), int(upstream.group(2)))
    return routes


def conf_values(text: str) -> dict[str, str]:
    """rabbitmq.conf (sysctl format): {key: value}, comments dropped."""
    values = {}
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if "=" in line:
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


def scrape_jobs(prometheus: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {job.get("job_name"): job for job in prometheus.get("scrape_configs") or []}


def dns_targets(job: dict[str, Any]) -> list[tuple[str, int]]:
    """[(name, port)] of a job's type-A dns_sd_configs."""
    targets = []
    for sd in job.get("dns_sd_configs") or []:
        if str(sd.get("type", "SRV")).upper() == "A":
            targets += [(name, int(sd.get("port", 0))) for name in sd.get("names") or []]
    return targets


_PROMQL_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless"}
_PROMQL_WORDS |= {"bool", "offset", "inf", "nan"}


def promql_metrics(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (not functions, label names or keywords)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # label values
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # range selectors
    text = _PROMQL_GROUPING.sub(" ", text)  # by (label, ...) and friends
    names = set()
    for match in re.finditer(r"(?<![\w.])([a-zA-Z_:][\w:]*)(\s*\()?", text):
        if match.group(2) or match.group(1).lower() in _PROMQL_WORDS:
            continue  # a function call or a keyword
        names.add(match.group(1))
    return names


def alert_rules(alerts: dict[str, Any]) -> dict[str, dict[str, Any]]:
    rules = {}
    for group in alerts.get("groups") or []:
        for rule in group.get("rules") or []:
            if "alert" in rule:
                rules[rule["alert"]] = rule
    return rules


def command_argv(service: dict[str, Any]) -> list[str]:
    """A compose service's command as argv; a ``sh -c "exec ..."`` wrapper is unwrapped."""
    command = service.get("command")
    argv = shlex.split(command) if isinstance(command, str) else list(command or [])
    if len(argv) == 3 and argv[0] in {"sh", "/bin/sh"} and argv[1] in {"-c", "-ec"}:
        argv = shlex.split(argv[2])
        if argv and argv[0] == "exec":
            argv = argv[1:]
    return argv


def comparable(argv: list[str]) -> list[str]:
    """argv without the program's directory and without the per-deployment options."""
    if not argv:
        return []
    out = [Path(argv[0]).name]
    index = 1
    while index < len(argv):
        option, has_value, _ = argv[index].partition("=")
        if option in PER_DEPLOYMENT_OPTIONS:
            index += 1 if has_value else 2
            continue
        out.append(argv[index])
        index += 1
    return out


def option_value(argv: list[str], *names: str) -> str | None:
    for index, arg in enumerate(argv):
        option, has_value, value = arg.partition("=")
        if option in names:
            if has_value:
                return value
            return argv[index + 1] if index + 1 < len(argv) else None
    return None


def bind_port(argv: list[str], *names: str) -> tuple[str, int] | None:
    """(host, port) of ``-b HOST:PORT`` / ``--port=PORT`` style options."""
    value = option_value(argv, *names)
    if value is None:
        return None
    host, _, port = value.rpartition(":")
    return host, int(port)


def published_ports(service: dict[str, Any]) -> list[tuple[int | None, int]]:
    """[(published, target)] of a compose service's ``ports`` (short or long syntax)."""
    ports = []
    for entry in service.get("ports") or []:
        if isinstance(entry, dict):
            published = entry.get("published")
            ports.append((int(published) if published is not None else None, int(entry["target"])))
            continue
        parts = str(entry).split("/")[0].split(":")
        target = int(parts[-1])
        published = int(parts[-2]) if len(parts) >= 2 and parts[-2] else None
        ports.append((published, target))
    return ports


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.partition("=")[::2] for item in env)
    return {key: "" if value is None else str(value) for key, value in env.items()}


def app_services(compose: Compose) -> dict[str, dict[str, Any]]:
    """The compose services that run the application image (built from the Dockerfile)."""
    app_image = (compose.get("x-service") or {}).get("image")
    return {
        name: service
        for name, service in compose["services"].items()
        if "build" in service or (app_image and service.get("image") == app_image)
    }


# ---------------------------------------------------------------- checks


def check_service_names(compose: Compose, programs: Programs) -> None:
    services = set(compose["services"])
    missing = sorted(set(programs) - services - CLUSTERED)
    assert not missing, f"supervisor programs with no compose service of the same name: {missing}"
    expected = set(programs) - CLUSTERED
    for program in sorted(CLUSTERED & set(programs)):
        nodes = cluster_nodes(compose, program)
        assert nodes, f"supervisor program {program}: no compose services {program}-1, {program}-2, ..."
        expected |= set(nodes)
    extra = sorted(services - expected - COMPOSE_ONLY)
    assert not extra, (
        f"compose services with no supervisor program of the same name: {extra} "
        f"(only {sorted(COMPOSE_ONLY)} are compose-only)"
    )


def check_web_ports(compose: Compose, programs: Programs, gateway: str) -> None:
    """The local stack's API ports reach each service's web replicas, through the gateway."""
    webs = sorted(name for name in programs if name.endswith("-web"))
    assert webs, "the supervisor config has no <service>-web program"
    gateway_published = published_ports(compose["services"].get("gateway") or {})
    routes = gateway_routes(gateway)
    for name in webs:
        _, port = bind_port(programs[name], "-b", "--bind") or (None, None)
        assert port is not None, f"supervisor program {name}: no -b HOST:PORT in {programs[name]}"
        service = compose["services"][name]
        argv = command_argv(service)
        bind = bind_port(argv, "-b", "--bind")
        assert bind is not None, f"compose service {name}: no -b HOST:PORT in its command {argv}"
        host, container_port = bind
        assert host == "0.0.0.0", (
            f"compose service {name}: gunicorn binds {host}:{container_port}; inside a container "
            f"it must bind 0.0.0.0 to be reachable"
        )
        published = published_ports(service)
        if replicas(service) == 1 and (port, container_port) in published:
            continue  # a single web server may publish its port itself
        # Replicas: the gateway publishes the port and proxies it to the service's containers.
        listens = [target for host_port, target in gateway_published if host_port == port]
        assert listens, (
            f"compose service {name}: supervisor binds port {port}, so compose must publish "
            f"{port}, on the gateway (proxying to {name}:{container_port}) or, with one replica, on "
            f"{name} -> container port {container_port}; gateway publishes {gateway_published}, "
            f"{name} publishes (host, container) {published}"
        )
        route = routes.get(listens[0])
        assert route == (name, container_port), (
            f"compose service {name}: the gateway publishes {port} -> {listens[0]}, which "
            f"{GATEWAY_CONF.name} routes to {route}, not to {name}:{container_port} (where gunicorn binds)"
        )


def check_flower_port(compose: Compose, programs: Programs) -> None:
    _, port = bind_port(programs["flower"], "--port") or (None, None)
    assert port == 5555, f"supervisor program flower: --port is {port}, SPEC §6 says 5555"
    argv = command_argv(compose["services"]["flower"])
    _, container_port = bind_port(argv, "--port") or (None, None)
    assert container_port is not None, f"compose service flower: no --port in its command {argv}"
    published = published_ports(compose["services"]["flower"])
    assert (port, container_port) in published, (
        f"compose service flower: supervisor's Flower listens on {port}, so compose must publish "
        f"{port} -> container port {container_port} (its --port); it publishes {published}"
    )


def check_commands(compose: Compose, programs: Programs) -> None:
    """Each web/worker/relay (and Flower) runs the same command as its supervisor program."""
    for name, argv in sorted(programs.items()):
        if name == "rabbitmq":  # the broker is the official image in compose
            continue
        want = comparable(argv)
        got = comparable(command_argv(compose["services"][name]))
        assert got == want, (
            f"compose service {name} runs {shlex.join(got)!r} but supervisor program {name} "
            f"runs {shlex.join(want)!r} (compared without {sorted(PER_DEPLOYMENT_OPTIONS)})"
        )


def check_service_modules(compose: Compose, services: list[str]) -> None:
    """``<svc>-web/worker/relay`` run ``<svc>``'s code, not another service's."""
    for svc in services:
        expected = {
            f"{svc}-web": f"{svc}_svc.wsgi",
            f"{svc}-worker": f"-A {svc}_svc worker",
            f"{svc}-relay": f"manage.py {svc} relay",
        }
        for name, fragment in expected.items():
            command = shlex.join(command_argv(compose["services"][name]))
            assert fragment in command, f"compose service {name}: command {command!r} lacks {fragment!r}"


def check_postgres_init(compose: Compose, init_sql: str, services: list[str]) -> None:
    """The init script makes a login role and a database per service from its one list
    (tests/e2e/test_deploy.py runs it against a real PostgreSQL)."""
    listed = re.search(r"unnest\(ARRAY\[([^\]]*)\]\)", init_sql)
    assert listed, f"{POSTGRES_INIT.name}: no unnest(ARRAY[...]) list of the services"
    names = re.findall(r"'([^']*)'", listed.group(1))
    for svc in services:
        assert svc in names, f"{POSTGRES_INIT.name}: does not create database saga_{svc} (not in its list)"
    for statement in ("CREATE ROLE %I LOGIN", "CREATE DATABASE %I OWNER %I", "REVOKE ALL ON DATABASE %I"):
        assert statement in init_sql, f"{POSTGRES_INIT.name}: no {statement!r}"
    volumes = []
    for volume in compose["services"]["postgres"].get("volumes") or []:
        if isinstance(volume, dict):
            volumes.append((volume.get("source", ""), volume.get("target", "")))
        else:
            source, _, rest = str(volume).partition(":")
            volumes.append((source, rest.partition(":")[0]))
    mounted = [
        (source, target)
        for source, target in volumes
        if source.endswith(f"deploy/{POSTGRES_INIT.name}")
        and target.startswith("/docker-entrypoint-initdb.d/")
    ]
    assert mounted, (
        f"compose service postgres: deploy/{POSTGRES_INIT.name} is not mounted into "
        f"/docker-entrypoint-initdb.d/ (volumes: {volumes})"
    )


def check_app_environment(compose: Compose) -> None:
    apps = app_services(compose)
    assert apps, "no compose service runs the application image"
    for name, service in sorted(apps.items()):
        env = environment(service)
        for key in ("SAGA_BROKER_URL", "SAGA_DB_HOST"):
            assert env.get(key), f"compose service {name}: {key} is not set"
        for url in broker_urls(env["SAGA_BROKER_URL"]):
            broker_host = urlparse(url).hostname
            assert broker_host in compose["services"], (
                f"compose service {name}: SAGA_BROKER_URL points at {broker_host!r}, not a compose service"
            )
        assert env["SAGA_DB_HOST"] in compose["services"], (
            f"compose service {name}: SAGA_DB_HOST is {env['SAGA_DB_HOST']!r}, not a compose service"
        )


def check_preparation(compose: Compose, services: list[str]) -> None:
    """The migrate job prepares every service; long-running app services wait for it."""
    script = shlex.join(command_argv(compose["services"]["migrate"]))
    script = " ".join(script.split())
    for svc in services:
        for command in PREPARATION_COMMANDS:
            assert f"manage.py {svc} {command}" in script, (
                f"compose service migrate: does not run 'manage.py {svc} {command}'"
            )
    for name, service in sorted(app_services(compose).items()):
        if name in {"migrate", "flower"}:
            continue
        condition = ((service.get("depends_on") or {}).get("migrate") or {}).get("condition")
        assert condition == "service_completed_successfully", (
            f"compose service {name}: must depend on migrate with condition "
            f"service_completed_successfully, has {condition!r}"
        )


def check_web_healthchecks(compose: Compose, programs: Programs) -> None:
    for name in sorted(n for n in programs if n.endswith("-web")):
        service = compose["services"][name]
        test = shlex.join(service.get("healthcheck", {}).get("test") or [])
        _, container_port = bind_port(command_argv(service), "-b", "--bind") or (None, None)
        assert f":{container_port}/healthz" in test, (
            f"compose service {name}: healthcheck {test!r} does not probe /healthz on port {container_port}"
        )


def check_rabbitmq_cluster(compose: Compose, rabbitmq_conf: str) -> None:
    """Three nodes, one cookie, the peer-discovery config mounted and naming exactly them."""
    nodes = cluster_nodes(compose, "rabbitmq")
    wanted = [f"rabbitmq-{n}" for n in range(1, RABBITMQ_NODES + 1)]
    assert nodes == wanted, f"compose must run the RabbitMQ nodes {wanted}, runs {nodes}"
    first = compose["services"][nodes[0]]
    node_names = []
    data_volumes: dict[str, str] = {}
    for name in nodes:
        service = compose["services"][name]
        assert str(service.get("image", "")).startswith("rabbitmq:3.13"), (
            f"compose service {name}: image {service.get('image')!r}, not rabbitmq:3.13"
        )
        env = environment(service)
        assert env.get("RABBITMQ_ERLANG_COOKIE"), f"compose service {name}: no RABBITMQ_ERLANG_COOKIE"
        for key in ("RABBITMQ_ERLANG_COOKIE", "RABBITMQ_DEFAULT_USER", "RABBITMQ_DEFAULT_PASS"):
            assert env.get(key) == environment(first).get(key), (
                f"compose service {name}: {key} differs from {nodes[0]}'s: one cluster needs one"
            )
        hostname = service.get("hostname")
        assert hostname == name, (
            f"compose service {name}: hostname {hostname!r}; the node name rabbit@<hostname> must be "
            f"stable (its data volume) and resolvable by its peers (the service name)"
        )
        node_names.append(f"rabbit@{hostname}")
        targets = mounted_at(service, RABBITMQ_CONF)
        assert any(
            t == "/etc/rabbitmq/rabbitmq.conf" or re.fullmatch(r"/etc/rabbitmq/conf\.d/.+\.conf", t)
            for t in targets
        ), (
            f"compose service {name}: deploy/rabbitmq/rabbitmq.conf is not mounted as its config "
            f"(/etc/rabbitmq/conf.d/*.conf); mounts {volume_mounts(service)}"
        )
        data = [source for source, target in volume_mounts(service) if target == "/var/lib/rabbitmq"]
        assert data, f"compose service {name}: no volume on /var/lib/rabbitmq (its data)"
        assert data[0] not in data_volumes, (
            f"compose service {name}: shares its data volume {data[0]} with {data_volumes.get(data[0])}"
        )
        data_volumes[data[0]] = name
    values = conf_values(rabbitmq_conf)
    backend = values.get("cluster_formation.peer_discovery_backend")
    assert backend in {"classic_config", "rabbit_peer_discovery_classic_config"}, (
        f"{RABBITMQ_CONF.name}: cluster_formation.peer_discovery_backend is {backend!r}, not classic_config"
    )
    listed = sorted(v for k, v in values.items() if k.startswith("cluster_formation.classic_config.nodes."))
    assert listed == sorted(node_names), (
        f"{RABBITMQ_CONF.name}: classic_config lists {listed}, the compose nodes are {sorted(node_names)}"
    )
    depends = compose["services"]["migrate"].get("depends_on") or {}
    for name in nodes:
        condition = (depends.get(name) or {}).get("condition") if isinstance(depends, dict) else None
        assert condition == "service_healthy", (
            f"compose service migrate: must wait for {name} (service_healthy) so that every quorum "
            f"queue it declares gets a replica on every node; has {condition!r}"
        )


def check_quorum_and_failover(compose: Compose) -> None:
    """Every app container: quorum queues, and a broker URL that fails over across all nodes."""
    nodes = cluster_nodes(compose, "rabbitmq")
    node_env = environment(compose["services"][nodes[0]]) if nodes else {}
    credentials = (node_env.get("RABBITMQ_DEFAULT_USER"), node_env.get("RABBITMQ_DEFAULT_PASS"))
    for name, service in sorted(app_services(compose).items()):
        env = environment(service)
        assert env.get("SAGA_QUEUE_TYPE") == "quorum", (
            f"compose service {name}: SAGA_QUEUE_TYPE is {env.get('SAGA_QUEUE_TYPE')!r}, not 'quorum'"
        )
        urls = [urlparse(url) for url in broker_urls(env.get("SAGA_BROKER_URL", ""))]
        hosts = [url.hostname for url in urls]
        assert sorted(hosts) == sorted(nodes), (
            f"compose service {name}: SAGA_BROKER_URL must list every RabbitMQ node once "
            f"({'; '.join(nodes)}) to fail over across them; it lists {hosts}"
        )
        for url in urls:
            assert url.scheme in {"amqp", "pyamqp"}, f"compose service {name}: broker URL scheme {url.scheme}"
            assert (url.username, url.password) == credentials, (
                f"compose service {name}: broker URL for {url.hostname} logs in as {url.username!r}, "
                f"the nodes' user is {credentials[0]!r}"
            )
            assert url.path.lstrip("/") == node_env.get("RABBITMQ_DEFAULT_VHOST"), (
                f"compose service {name}: broker URL for {url.hostname} uses vhost {url.path!r}"
            )
    flower_api = option_value(command_argv(compose["services"]["flower"]), "--broker_api") or ""
    assert urlparse(flower_api).hostname in nodes, (
        f"compose service flower: --broker_api {flower_api!r} is not on a RabbitMQ node {nodes}"
    )


def check_replicas(compose: Compose, services: list[str]) -> None:
    for svc in services:
        for role in REPLICATED_ROLES:
            name = f"{svc}-{role}"
            assert replicas(compose["services"][name]) >= 2, (
                f"compose service {name}: deploy.replicas is {replicas(compose['services'][name])}; "
                f"each service's {role} runs replicated on the cluster"
            )
    for name, why in SINGLETONS.items():
        assert replicas(compose["services"][name]) == 1, f"compose service {name}: must run once ({why})"
    for name, service in sorted(compose["services"].items()):
        if replicas(service) < 2:
            continue
        fixed = [(host, target) for host, target in published_ports(service) if host is not None]
        assert not fixed, (
            f"compose service {name}: {replicas(service)} replicas cannot all publish host port(s) {fixed}"
        )
        assert "container_name" not in service, f"compose service {name}: container_name with replicas"


def check_metrics_endpoints(compose: Compose, services: list[str]) -> None:
    """Workers and relays serve their own /metrics; each web container adds up its processes."""
    for svc in services:
        for role in ("worker", "relay"):
            name = f"{svc}-{role}"
            env = environment(compose["services"][name])
            port = env.get("SAGA_METRICS_PORT", "")
            assert 0 < (int(port) if port.isdigit() else 0) < 65536, (
                f"compose service {name}: SAGA_METRICS_PORT is {port!r}; its replicas share no files, "
                f"so each must serve its own /metrics"
            )
            assert env.get("SAGA_METRICS_ADDRESS") == "0.0.0.0", (
                f"compose service {name}: SAGA_METRICS_ADDRESS is {env.get('SAGA_METRICS_ADDRESS')!r}; "
                f"Prometheus reaches the container only on 0.0.0.0"
            )
        web = compose["services"][f"{svc}-web"]
        assert environment(web).get("PROMETHEUS_MULTIPROC_DIR"), (
            f"compose service {svc}-web: no PROMETHEUS_MULTIPROC_DIR, so /metrics shows one gunicorn process"
        )
    for name, service in sorted(app_services(compose).items()):
        directory = environment(service).get("PROMETHEUS_MULTIPROC_DIR")
        if directory:
            tmpfs = service.get("tmpfs") or []
            tmpfs = [tmpfs] if isinstance(tmpfs, str) else tmpfs
            assert directory in [str(t).partition(":")[0] for t in tmpfs], (
                f"compose service {name}: PROMETHEUS_MULTIPROC_DIR {directory} must be a tmpfs "
                f"(it must exist, and be empty at each start)"
            )


def check_environment_is_read(compose: Compose) -> None:
    """Every SAGA_ variable compose sets is one the code reads (a typo would be silently ignored)."""
    code = "\n".join(path.read_text() for path in CODE_FILES if path.exists())
    for name, service in sorted(app_services(compose).items()):
        for key in sorted(environment(service)):
            if key.startswith("SAGA_") or key == "PROMETHEUS_MULTIPROC_DIR":
                assert f'"{key}"' in code or f"'{key}'" in code or f"{key}=" in code, (
                    f"compose service {name}: sets {key}, which no code reads (common/settings.py "
                    f"and the rest of common/ and *_svc/)"
                )


def check_prometheus(compose: Compose, prometheus: dict[str, Any], services: list[str]) -> None:
    """Prometheus runs, loads the alerts and scrapes every web, worker and relay replica."""
    service = compose["services"].get("prometheus")
    assert service, "compose has no prometheus service"
    assert str(service.get("image", "")).startswith("prom/prometheus"), (
        f"compose service prometheus: image {service.get('image')!r}"
    )
    assert "/etc/prometheus/prometheus.yml" in mounted_at(service, PROMETHEUS_CONF), (
        f"compose service prometheus: deploy/prometheus/prometheus.yml not mounted at "
        f"/etc/prometheus/prometheus.yml; mounts {volume_mounts(service)}"
    )
    alerts_at = mounted_at(service, ALERTS_FILE)
    rule_files = prometheus.get("rule_files") or []
    assert any(target in rule_files for target in alerts_at), (
        f"compose service prometheus: deploy/prometheus/alerts.yml is mounted at {alerts_at}, "
        f"its rule_files are {rule_files}: the alerts are not loaded"
    )
    jobs = scrape_jobs(prometheus)
    for job_name, job in jobs.items():
        for name, _ in dns_targets(job):
            assert name in compose["services"], f"{PROMETHEUS_CONF.name}: job {job_name} resolves {name!r}"
    for svc in services:
        web = compose["services"][f"{svc}-web"]
        _, web_port = bind_port(command_argv(web), "-b", "--bind") or (None, None)
        expected = {f"{svc}-web": web_port}
        for role in ("worker", "relay"):
            port = environment(compose["services"][f"{svc}-{role}"]).get("SAGA_METRICS_PORT", "")
            expected[f"{svc}-{role}"] = int(port) if port.isdigit() else None
        for name, port in expected.items():
            job = jobs.get(name)
            assert job is not None, (
                f"{PROMETHEUS_CONF.name}: no scrape job {name!r} (the alerts use job names)"
            )
            assert (name, port) in dns_targets(job), (
                f"{PROMETHEUS_CONF.name}: job {name} must find every {name} replica (dns_sd_configs "
                f"type A, names [{name}], port {port}); it has {dns_targets(job)}"
            )
            assert job.get("metrics_path", "/metrics") == "/metrics", f"job {name}: metrics_path"


def check_alerts(alerts: dict[str, Any], metrics: set[str], services: list[str]) -> None:
    """The four alerts exist, and every metric an alert reads is one the code defines."""
    rules = alert_rules(alerts)
    for alert, metric in REQUIRED_ALERTS.items():
        assert alert in rules, f"{ALERTS_FILE.name}: no alert {alert} (has {sorted(rules)})"
        assert metric in promql_metrics(str(rules[alert].get("expr", ""))), (
            f"{ALERTS_FILE.name}: alert {alert} does not read {metric}"
        )
    for alert, rule in sorted(rules.items()):
        used = promql_metrics(str(rule.get("expr", "")))
        assert used, f"{ALERTS_FILE.name}: alert {alert} reads no metric"
        unknown = sorted(used - metrics - PROMETHEUS_OWN_METRICS)
        assert not unknown, (
            f"{ALERTS_FILE.name}: alert {alert} reads {unknown}, which the code does not define "
            f"({', '.join(str(p.relative_to(ROOT)) for p in METRICS_MODULES)})"
        )
    down = str(rules["SagaWorkerDown"].get("expr", ""))
    for svc in services:
        assert f'absent(up{{job="{svc}-worker"}})' in down, (
            f"{ALERTS_FILE.name}: SagaWorkerDown misses {svc}-worker having no replica at all "
            f'(absent(up{{job="{svc}-worker"}}))'
        )
        assert re.search(r'up\{job=~"[^"]*\b' + svc + r'\b[^"]*-worker"\}', down), (
            f"{ALERTS_FILE.name}: SagaWorkerDown does not watch the replicas of {svc}-worker"
        )


def check_image(compose: Compose, dockerfile: str, dockerignore: str) -> None:
    """What compose mounts exists; the image has what its entry point needs; .dockerignore keeps it so."""
    for name, service in sorted(compose["services"].items()):
        for source, _ in volume_mounts(service):
            if source.startswith("./"):
                assert (ROOT / source).exists(), (
                    f"compose service {name}: mounts {source}, which does not exist"
                )
    copied = [line.split()[1:-1] for line in dockerfile.splitlines() if line.startswith("COPY ")]
    copied_paths = {path for sources in copied for path in sources if not path.startswith("--")}
    entrypoint = re.search(r"^ENTRYPOINT\s+(.*)$", dockerfile, re.MULTILINE)
    if entrypoint:
        for script in re.findall(r"deploy/[\w.-]+", entrypoint.group(1)):
            assert script in copied_paths, (
                f"Dockerfile: ENTRYPOINT runs {script}, which no COPY puts in the image"
            )
    ignored = {
        line.strip().rstrip("/")
        for line in dockerignore.splitlines()
        if line.strip() and not line.startswith("#")
    }
    for needed in (".git", ".venv", "var"):
        assert needed in ignored, (
            f".dockerignore: does not exclude {needed} (local state, never in the image)"
        )
    for path in sorted(copied_paths):
        top = path.split("/")[0]
        assert not {path, top} & ignored, f".dockerignore: excludes {path}, which the Dockerfile copies"


def check_all(deployment: Deployment, programs: Programs, init_sql: str, services: list[str]) -> None:
    compose = deployment.compose
    check_service_names(compose, programs)
    check_web_ports(compose, programs, deployment.gateway)
    check_flower_port(compose, programs)
    check_commands(compose, programs)
    check_service_modules(compose, services)
    check_postgres_init(compose, init_sql, services)
    check_app_environment(compose)
    check_preparation(compose, services)
    check_web_healthchecks(compose, programs)
    check_rabbitmq_cluster(compose, deployment.rabbitmq_conf)
    check_quorum_and_failover(compose)
    check_replicas(compose, services)
    check_metrics_endpoints(compose, services)
    check_environment_is_read(compose)
    check_prometheus(compose, deployment.prometheus, services)
    check_alerts(deployment.alerts, defined_metrics(), services)


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def supervisor():
    return load_script("supervisor_conf")


@pytest.fixture(scope="module")
def programs(supervisor) -> Programs:
    # The defaults, whatever this shell exports (SAGA_ORDER_PORT, SAGA_BROKER_URL, ...).
    with pytest.MonkeyPatch.context() as mp:
        for key in [k for k in os.environ if k.startswith("SAGA_")]:
            mp.delenv(key)
        return parse_programs(supervisor.main())


@pytest.fixture(scope="module")
def services(supervisor) -> list[str]:
    return list(supervisor.SERVICES)


@pytest.fixture
def deployment() -> Deployment:
    return load_deployment()


@pytest.fixture
def compose(deployment) -> Compose:
    return deployment.compose


@pytest.fixture(scope="module")
def init_sql() -> str:
    return POSTGRES_INIT.read_text()


@pytest.fixture(scope="module")
def metrics() -> set[str]:
    return defined_metrics()


# ---------------------------------------------------------------- the real files


def test_supervisor_config_parses(programs, services):
    expected = {"rabbitmq", "flower", "order-beat"} | {
        f"{s}-{role}" for s in services for role in ("web", "worker", "relay")
    }
    assert set(programs) == expected, f"supervisor programs changed: {sorted(set(programs) ^ expected)}"


# Every check of the deployment, run on the real files. A check's fixtures are its
# parameters' names; the same checks are run on broken copies below, to see them fail.
DEPLOYMENT_CHECKS = {
    "service_names": check_service_names,
    "flower_port": check_flower_port,
    "commands": check_commands,
    "service_modules": check_service_modules,
    "postgres_init": check_postgres_init,
    "app_environment": check_app_environment,
    "preparation": check_preparation,
    "web_healthchecks": check_web_healthchecks,
    "rabbitmq_cluster": lambda deployment: check_rabbitmq_cluster(
        deployment.compose, deployment.rabbitmq_conf
    ),
    "quorum_queues_and_broker_failover": check_quorum_and_failover,
    "replicas": check_replicas,
    "metrics_endpoints": check_metrics_endpoints,
    "environment_is_read_by_the_code": check_environment_is_read,
    "prometheus_scrapes_every_replica": lambda deployment, services: check_prometheus(
        deployment.compose, deployment.prometheus, services
    ),
    "alerts": lambda deployment, metrics, services: check_alerts(deployment.alerts, metrics, services),
    "image": lambda compose: check_image(compose, DOCKERFILE.read_text(), DOCKERIGNORE.read_text()),
}


@pytest.mark.parametrize("name", list(DEPLOYMENT_CHECKS))
def test_the_deployment(name: str, request: pytest.FixtureRequest) -> None:
    check = DEPLOYMENT_CHECKS[name]
    check(**{fixture: request.getfixturevalue(fixture) for fixture in inspect.signature(check).parameters})


def test_every_service_has_web_worker_and_relay_containers(compose, services):
    apps = app_services(compose)
    for svc in services:
        for role in ("web", "worker", "relay"):
            assert f"{svc}-{role}" in apps, (
                f"compose: no {svc}-{role} container running the application image"
            )


def test_web_ports(deployment, programs, supervisor):
    check_web_ports(deployment.compose, programs, deployment.gateway)
    routes = gateway_routes(deployment.gateway)
    published = published_ports(deployment.compose["services"]["gateway"])
    for svc, port in supervisor.SERVICES.items():
        assert (port, port) in published, f"compose service gateway: does not publish {port} (SPEC §6)"
        assert routes[port][0] == f"{svc}-web", f"{GATEWAY_CONF.name}: {port} is not routed to {svc}-web"


def test_the_code_defines_the_metrics_the_alerts_need(metrics):
    """The grep of the metrics modules finds what they define (else check_alerts proves nothing)."""
    assert {
        "saga_parked_total",
        "saga_parked_messages",
        "saga_stuck_sagas",
        "saga_outbox_oldest_unpublished_seconds",
        "saga_handler_seconds_bucket",
        "saga_finished_total",
    } <= metrics


def test_promql_metric_names():
    expr = (
        'max by (service) (saga_parked_messages{service!="x"}) > 0 or (sum by (service) '
        "(increase(saga_parked_total[10m])) > 0 unless on (service) max by (service) (saga_parked_messages)) "
        'or absent(up{job="order-worker"})'
    )
    assert promql_metrics(expr) == {"saga_parked_messages", "saga_parked_total", "up"}


def test_shared_anchor_is_used(compose):
    """The app services share one definition (x-service): same image, same environment."""
    anchor = compose.get("x-service")
    assert anchor, "compose.yaml has no x-service extension"
    for name, service in sorted(app_services(compose).items()):
        assert service.get("image") == anchor.get("image"), (
            f"compose service {name}: image differs from x-service"
        )
        env = environment(service)
        for key, value in environment(anchor).items():
            assert env.get(key) == value, (
                f"compose service {name}: {key}={env.get(key)!r}, x-service has {value!r}"
            )


# ---------------------------------------------------------------- the checks catch mismatches


def _put(service: str, key: str, value: Any):
    """A mutation setting one key of one compose service."""

    def mutate(compose: Compose) -> None:
        compose["services"][service][key] = value

    return mutate


def _replace(service: str, key: str, old: str, new: str):
    """A mutation replacing text in one key of a compose service (a string, or each part of a list)."""

    def mutate(compose: Compose) -> None:
        value = compose["services"][service][key]
        changed = value.replace(old, new) if isinstance(value, str) else [p.replace(old, new) for p in value]
        assert changed != value, f"{service}.{key} holds no {old!r}"
        compose["services"][service][key] = changed

    return mutate


def _without(service: str, key: str, text: str):
    """A mutation removing the parts of a list key of a compose service that contain ``text``."""

    def mutate(compose: Compose) -> None:
        compose["services"][service][key] = [
            part for part in compose["services"][service][key] if text not in part
        ]

    return mutate


def _drop(service: str, key: str | None = None):
    """A mutation removing a compose service, or one key of it."""

    def mutate(compose: Compose) -> None:
        if key is None:
            del compose["services"][service]
        else:
            del compose["services"][service][key]

    return mutate


def _rename_service(compose: Compose) -> None:
    compose["services"]["shipping-workers"] = compose["services"].pop("shipping-worker")


def _set_env(name: str, **changes: str | None):
    """A mutation setting (or, with None, removing) environment variables of one service."""

    def mutate(compose: Compose) -> None:
        env = {**environment(compose["services"][name]), **changes}
        compose["services"][name]["environment"] = {k: v for k, v in env.items() if v is not None}

    return mutate


def _migrate_not_waiting(compose: Compose) -> None:
    del compose["services"]["migrate"]["depends_on"]["rabbitmq-3"]


def _two_node_url(compose: Compose) -> None:
    url = environment(compose["services"]["order-relay"])["SAGA_BROKER_URL"]
    _set_env("order-relay", SAGA_BROKER_URL=";".join(broker_urls(url)[:2]))(compose)


MUTATIONS = {
    "order-web published on another port": (_put("order-web", "ports", ["127.0.0.1:9001:8001"]), "order-web"),
    "payment-web gunicorn binds another port": (
        _replace("payment-web", "command", "0.0.0.0:8002", "0.0.0.0:8012"),
        "payment-web",
    ),
    "inventory-relay missing": (_drop("inventory-relay"), "inventory-relay"),
    "shipping-worker renamed": (_rename_service, "shipping-worker"),
    "flower published on another port": (_put("flower", "ports", ["127.0.0.1:5556:5555"]), "flower"),
    "order-worker without --pool=solo": (
        _replace("order-worker", "command", " --pool=solo", ""),
        "order-worker",
    ),
    "payment-relay runs the order relay": (
        _put("payment-relay", "command", "python manage.py order relay"),
        "payment-relay",
    ),
    "shipping-relay without SAGA_BROKER_URL": (
        _set_env("shipping-relay", SAGA_BROKER_URL=None),
        "shipping-relay",
    ),
    "order-worker's SAGA_DB_HOST not a compose service": (
        _set_env("order-worker", SAGA_DB_HOST="127.0.0.1"),
        "order-worker",
    ),
    "migrate skips inventory's migrations": (
        _replace("migrate", "command", "inventory migrate", "inventory check"),
        "inventory",
    ),
    "shipping-web healthcheck not on /healthz": (
        _put("shipping-web", "healthcheck", {"test": ["CMD", "true"]}),
        "shipping-web",
    ),
    # the cluster
    "rabbitmq-3 missing": (_drop("rabbitmq-3"), "rabbitmq-3"),
    "rabbitmq-2 with another Erlang cookie": (
        _set_env("rabbitmq-2", RABBITMQ_ERLANG_COOKIE="another-cookie"),
        "rabbitmq-2: RABBITMQ_ERLANG_COOKIE",
    ),
    "rabbitmq-3 without the peer-discovery config": (
        _without("rabbitmq-3", "volumes", "rabbitmq.conf"),
        "rabbitmq-3",
    ),
    "rabbitmq-2 with another hostname": (_put("rabbitmq-2", "hostname", "rabbit-two"), "rabbitmq-2"),
    "rabbitmq-2 on rabbitmq-1's data volume": (
        _replace("rabbitmq-2", "volumes", "rabbitmq-2-data", "rabbitmq-1-data"),
        "rabbitmq-2",
    ),
    "migrate does not wait for rabbitmq-3": (_migrate_not_waiting, "rabbitmq-3"),
    "payment-worker on classic queues": (
        _set_env("payment-worker", SAGA_QUEUE_TYPE="classic"),
        "payment-worker",
    ),
    "shipping-web without SAGA_QUEUE_TYPE": (_set_env("shipping-web", SAGA_QUEUE_TYPE=None), "shipping-web"),
    "order-relay fails over to two nodes only": (_two_node_url, "order-relay"),
    "flower's broker API not on a node": (
        _replace("flower", "command", "@rabbitmq-1:15672", "@rabbitmq:15672"),
        "flower",
    ),
    "inventory-web not replicated": (_put("inventory-web", "deploy", {"replicas": 1}), "inventory-web"),
    "order-beat replicated": (_put("order-beat", "deploy", {"replicas": 2}), "order-beat"),
    "shipping-worker replicas publish a host port": (
        _put("shipping-worker", "ports", ["127.0.0.1:9100:9100"]),
        "shipping-worker",
    ),
    # metrics
    "order-worker metrics on loopback": (
        _set_env("order-worker", SAGA_METRICS_ADDRESS="127.0.0.1"),
        "order-worker: SAGA_METRICS_ADDRESS",
    ),
    "shipping-relay without a metrics port": (
        _set_env("shipping-relay", SAGA_METRICS_PORT=None),
        "shipping-relay: SAGA_METRICS_PORT",
    ),
    "inventory-web without a multiprocess directory": (
        _set_env("inventory-web", PROMETHEUS_MULTIPROC_DIR=None),
        "inventory-web",
    ),
    "payment-web's multiprocess directory not a tmpfs": (_drop("payment-web", "tmpfs"), "payment-web"),
    "a misspelt variable no code reads": (
        _set_env("inventory-worker", SAGA_METRIC_PORT="9100"),
        "SAGA_METRIC_PORT",
    ),
    "prometheus without the alert rules": (_without("prometheus", "volumes", "alerts.yml"), "alerts.yml"),
}


def _gateway_route(deployment: Deployment) -> None:
    deployment.gateway = deployment.gateway.replace(
        "set $web inventory-web:8003;", "set $web payment-web:8002;"
    )


def _peer_list(deployment: Deployment) -> None:
    deployment.rabbitmq_conf = re.sub(
        r"(?m)^cluster_formation\.classic_config\.nodes\.3 .*$", "", deployment.rabbitmq_conf
    )


def _peer_backend(deployment: Deployment) -> None:
    deployment.rabbitmq_conf = deployment.rabbitmq_conf.replace("= classic_config", "= dns")


def deployment_jobs(deployment: Deployment) -> list[dict[str, Any]]:
    return deployment.prometheus["scrape_configs"]


def _drop_job(deployment: Deployment) -> None:
    deployment.prometheus["scrape_configs"] = [
        job for job in deployment_jobs(deployment) if job["job_name"] != "payment-relay"
    ]


def _job_port(name: str, port: int):
    def mutate(deployment: Deployment) -> None:
        for job in deployment_jobs(deployment):
            if job["job_name"] == name:
                job["dns_sd_configs"] = [{**sd, "port": port} for sd in job["dns_sd_configs"]]

    return mutate


def _rules(deployment: Deployment) -> list[dict[str, Any]]:
    return deployment.alerts["groups"][0]["rules"]


def _drop_alert(deployment: Deployment) -> None:
    deployment.alerts["groups"][0]["rules"] = [r for r in _rules(deployment) if r["alert"] != "SagaOutboxLag"]


def _unknown_metric(deployment: Deployment) -> None:
    for rule in _rules(deployment):
        if rule["alert"] == "SagaStuck":
            rule["expr"] += " or max by (service) (saga_stuck_orders) > 0"


def _worker_down_misses_one(deployment: Deployment) -> None:
    for rule in _rules(deployment):
        if rule["alert"] == "SagaWorkerDown":
            rule["expr"] = rule["expr"].replace('or absent(up{job="shipping-worker"})', "")


def _parked_alert_on_counter_only(deployment: Deployment) -> None:
    for rule in _rules(deployment):
        if rule["alert"] == "SagaParkedMessages":
            rule["expr"] = "sum by (service) (increase(saga_parked_total[10m])) > 0"


def _on_compose(mutate):
    return lambda deployment: mutate(deployment.compose)


DEPLOYMENT_MUTATIONS = {
    **{name: (_on_compose(mutate), named) for name, (mutate, named) in MUTATIONS.items()},
    "the gateway routes 8003 to payment-web": (_gateway_route, "inventory-web"),
    "peer discovery lists two nodes": (_peer_list, "rabbit@rabbitmq-3"),
    "peer discovery not from the config": (_peer_backend, "classic_config"),
    "payment-relay not scraped": (_drop_job, "payment-relay"),
    "inventory-worker scraped on another port": (_job_port("inventory-worker", 9200), "inventory-worker"),
    "order-web scraped on another port": (_job_port("order-web", 8011), "order-web"),
    "SagaOutboxLag missing": (_drop_alert, "SagaOutboxLag"),
    "an alert on a metric the code does not define": (_unknown_metric, "saga_stuck_orders"),
    "SagaWorkerDown blind to shipping having no worker": (_worker_down_misses_one, "shipping-worker"),
    "SagaParkedMessages without the parked gauge": (_parked_alert_on_counter_only, "saga_parked_messages"),
}


@pytest.mark.parametrize("mutation", list(DEPLOYMENT_MUTATIONS), ids=list(DEPLOYMENT_MUTATIONS))
def test_checks_fail_on_a_mismatch(mutation, deployment, programs, init_sql, services):
    check_all(deployment, programs, init_sql, services)  # the real files pass...
    mutate, named = DEPLOYMENT_MUTATIONS[mutation]
    broken = copy.deepcopy(deployment)
    mutate(broken)
    with pytest.raises(AssertionError, match=re.escape(named)):  # ...a broken copy does not
        check_all(broken, programs, init_sql, services)


@pytest.mark.parametrize("svc", SERVICES)
def test_postgres_init_check_fails_without_a_database(svc, compose, init_sql, services):
    broken = re.sub(rf"'{svc}',? ?", "", init_sql)
    assert broken != init_sql, f"test setup: no '{svc}' in the list to remove"
    with pytest.raises(AssertionError, match=f"database saga_{svc}"):
        check_postgres_init(compose, broken, services)


def test_supervisor_port_change_is_caught(supervisor, deployment):
    """A port moved in the local stack (SAGA_ORDER_PORT) no longer matches compose."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SAGA_ORDER_PORT", "9101")
        moved = parse_programs(supervisor.main())
    with pytest.raises(AssertionError, match="order-web: supervisor binds port 9101"):
        check_web_ports(deployment.compose, moved, deployment.gateway)


IMAGE_MUTATIONS = {
    "the entry point script not copied": (
        lambda d, i: (d.replace("COPY deploy/docker-entrypoint.sh ./deploy/docker-entrypoint.sh\n", ""), i),
        "deploy/docker-entrypoint.sh",
    ),
    ".dockerignore lets .venv in": (lambda d, i: (d, i.replace("\n.venv\n", "\n")), ".venv"),
    ".dockerignore drops what the image copies": (lambda d, i: (d, i + "\ncommon\n"), "excludes common"),
}


@pytest.mark.parametrize("mutation", list(IMAGE_MUTATIONS), ids=list(IMAGE_MUTATIONS))
def test_image_check_fails_on_a_mismatch(mutation, compose):
    dockerfile, dockerignore = DOCKERFILE.read_text(), DOCKERIGNORE.read_text()
    check_image(compose, dockerfile, dockerignore)
    mutate, named = IMAGE_MUTATIONS[mutation]
    with pytest.raises(AssertionError, match=re.escape(named)):
        check_image(compose, *mutate(dockerfile, dockerignore))


def test_image_check_fails_on_a_missing_mounted_file(compose):
    broken = copy.deepcopy(compose)
    broken["services"]["gateway"]["volumes"] = ["./deploy/gateway/missing.conf:/etc/nginx/nginx.conf:ro"]
    with pytest.raises(AssertionError, match="missing.conf"):
        check_image(broken, DOCKERFILE.read_text(), DOCKERIGNORE.read_text())
