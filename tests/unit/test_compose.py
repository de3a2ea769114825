"""compose.yaml runs the same system as the local stack (scripts/supervisor_conf.py).

The supervisord configuration that ``make up`` writes is the reference: every
program has a compose service of the same name, runs the same command (apart from
where it binds and what it is called), and the web servers and Flower publish the
ports the local stack listens on. Plain pytest and PyYAML: no Django, no Docker.

Each check is a function of the parsed compose file and the supervisor programs, so
the tests at the bottom can feed it a broken copy and see it fail.
"""

from __future__ import annotations

import copy
import importlib.util
import os
import re
import shlex
from configparser import RawConfigParser
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "compose.yaml"
SUPERVISOR_CONF = ROOT / "scripts" / "supervisor_conf.py"
POSTGRES_INIT = ROOT / "deploy" / "postgres-init.sql"

# Compose services that have no supervisor program: the database (the local stack
# uses the machine's PostgreSQL) and the one-shot preparation job (scripts/stack.sh).
COMPOSE_ONLY = {"postgres", "migrate"}
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


# ---------------------------------------------------------------- loading


def load_supervisor_module():
    spec = importlib.util.spec_from_file_location("saga_supervisor_conf", SUPERVISOR_CONF)
    assert spec is not None, f"cannot load {SUPERVISOR_CONF}"
    assert spec.loader is not None, f"cannot load {SUPERVISOR_CONF}"
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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


# ---------------------------------------------------------------- helpers


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
    missing = sorted(set(programs) - services)
    assert not missing, f"supervisor programs with no compose service of the same name: {missing}"
    extra = sorted(services - set(programs) - COMPOSE_ONLY)
    assert not extra, (
        f"compose services with no supervisor program of the same name: {extra} "
        f"(only {sorted(COMPOSE_ONLY)} are compose-only)"
    )


def check_web_ports(compose: Compose, programs: Programs) -> None:
    webs = sorted(name for name in programs if name.endswith("-web"))
    assert webs, "the supervisor config has no <service>-web program"
    for name in webs:
        _, port = bind_port(programs[name], "-b", "--bind") or (None, None)
        assert port is not None, f"supervisor program {name}: no -b HOST:PORT in {programs[name]}"
        argv = command_argv(compose["services"][name])
        bind = bind_port(argv, "-b", "--bind")
        assert bind is not None, f"compose service {name}: no -b HOST:PORT in its command {argv}"
        host, container_port = bind
        assert host == "0.0.0.0", (
            f"compose service {name}: gunicorn binds {host}:{container_port}; inside a container "
            f"it must bind 0.0.0.0 to be reachable"
        )
        published = published_ports(compose["services"][name])
        assert (port, container_port) in published, (
            f"compose service {name}: supervisor binds port {port}, so compose must publish "
            f"{port} -> container port {container_port} (where gunicorn binds); "
            f"it publishes (host, container) {published}"
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
    for svc in services:
        db = f"saga_{svc}"
        assert re.search(rf"create\s+database\s+\"?{db}\"?[\s;]", init_sql, re.IGNORECASE), (
            f"{POSTGRES_INIT.name}: does not create database {db}"
        )
        assert re.search(
            rf"create\s+role\s+\"?{db}\"?\s[^;]*\blogin\b[^;]*password\s+'{db}'", init_sql, re.IGNORECASE
        ), f"{POSTGRES_INIT.name}: does not create login role {db} with password '{db}'"
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
        broker_host = urlparse(env["SAGA_BROKER_URL"]).hostname
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


def check_all(compose: Compose, programs: Programs, init_sql: str, services: list[str]) -> None:
    check_service_names(compose, programs)
    check_web_ports(compose, programs)
    check_flower_port(compose, programs)
    check_commands(compose, programs)
    check_service_modules(compose, services)
    check_postgres_init(compose, init_sql, services)
    check_app_environment(compose)
    check_preparation(compose, services)
    check_web_healthchecks(compose, programs)


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def supervisor():
    return load_supervisor_module()


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
def compose() -> Compose:
    return load_compose()


@pytest.fixture(scope="module")
def init_sql() -> str:
    return POSTGRES_INIT.read_text()


# ---------------------------------------------------------------- the real files


def test_supervisor_config_parses(programs, services):
    expected = {"rabbitmq", "flower", "order-beat"} | {
        f"{s}-{role}" for s in services for role in ("web", "worker", "relay")
    }
    assert set(programs) == expected, f"supervisor programs changed: {sorted(set(programs) ^ expected)}"


def test_service_names(compose, programs):
    check_service_names(compose, programs)


def test_web_ports(compose, programs, supervisor):
    check_web_ports(compose, programs)
    for svc, port in supervisor.SERVICES.items():
        assert (port, port) in published_ports(compose["services"][f"{svc}-web"]), (
            f"compose service {svc}-web: does not publish {port} (SPEC §6)"
        )


def test_flower_port(compose, programs):
    check_flower_port(compose, programs)


def test_commands(compose, programs):
    check_commands(compose, programs)


def test_service_modules(compose, services):
    check_service_modules(compose, services)


def test_postgres_init(compose, init_sql, services):
    check_postgres_init(compose, init_sql, services)


def test_app_environment(compose):
    check_app_environment(compose)


def test_preparation(compose, services):
    check_preparation(compose, services)


def test_web_healthchecks(compose, programs):
    check_web_healthchecks(compose, programs)


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


def _set_port(compose: Compose) -> None:
    compose["services"]["order-web"]["ports"] = ["127.0.0.1:9001:8001"]


def _set_bind(compose: Compose) -> None:
    service = compose["services"]["payment-web"]
    service["command"] = service["command"].replace("0.0.0.0:8002", "0.0.0.0:8012")


def _drop_service(compose: Compose) -> None:
    del compose["services"]["inventory-relay"]


def _rename_service(compose: Compose) -> None:
    compose["services"]["shipping-workers"] = compose["services"].pop("shipping-worker")


def _flower_port(compose: Compose) -> None:
    compose["services"]["flower"]["ports"] = ["127.0.0.1:5556:5555"]


def _worker_flag(compose: Compose) -> None:
    service = compose["services"]["order-worker"]
    service["command"] = service["command"].replace(" --pool=solo", "")


def _relay_service(compose: Compose) -> None:
    compose["services"]["payment-relay"]["command"] = "python manage.py order relay"


def _no_broker_url(compose: Compose) -> None:
    service = compose["services"]["shipping-relay"]
    service["environment"] = {k: v for k, v in environment(service).items() if k != "SAGA_BROKER_URL"}


def _db_host(compose: Compose) -> None:
    service = compose["services"]["order-worker"]
    service["environment"] = {**environment(service), "SAGA_DB_HOST": "127.0.0.1"}


def _skip_migration(compose: Compose) -> None:
    service = compose["services"]["migrate"]
    service["command"] = [part.replace("inventory migrate", "inventory check") for part in service["command"]]


def _healthcheck(compose: Compose) -> None:
    compose["services"]["shipping-web"]["healthcheck"] = {"test": ["CMD", "true"]}


MUTATIONS = {
    "order-web published on another port": (_set_port, "order-web"),
    "payment-web gunicorn binds another port": (_set_bind, "payment-web"),
    "inventory-relay missing": (_drop_service, "inventory-relay"),
    "shipping-worker renamed": (_rename_service, "shipping-worker"),
    "flower published on another port": (_flower_port, "flower"),
    "order-worker without --pool=solo": (_worker_flag, "order-worker"),
    "payment-relay runs the order relay": (_relay_service, "payment-relay"),
    "shipping-relay without SAGA_BROKER_URL": (_no_broker_url, "shipping-relay"),
    "order-worker's SAGA_DB_HOST not a compose service": (_db_host, "order-worker"),
    "migrate skips inventory's migrations": (_skip_migration, "inventory"),
    "shipping-web healthcheck not on /healthz": (_healthcheck, "shipping-web"),
}


@pytest.mark.parametrize("mutation", list(MUTATIONS), ids=list(MUTATIONS))
def test_checks_fail_on_a_mismatch(mutation, compose, programs, init_sql, services):
    check_all(compose, programs, init_sql, services)  # the real file passes...
    mutate, named = MUTATIONS[mutation]
    broken = copy.deepcopy(compose)
    mutate(broken)
    with pytest.raises(AssertionError, match=re.escape(named)):  # ...a broken copy does not
        check_all(broken, programs, init_sql, services)


@pytest.mark.parametrize("svc", ["order", "payment", "inventory", "shipping"])
def test_postgres_init_check_fails_without_a_database(svc, compose, init_sql, services):
    broken = re.sub(rf"(?im)^create database saga_{svc}\b.*$", "", init_sql)
    assert broken != init_sql, f"test setup: no 'CREATE DATABASE saga_{svc}' line to remove"
    with pytest.raises(AssertionError, match=f"database saga_{svc}"):
        check_postgres_init(compose, broken, services)


def test_supervisor_port_change_is_caught(supervisor, compose):
    """A port moved in the local stack (SAGA_ORDER_PORT) no longer matches compose."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SAGA_ORDER_PORT", "9101")
        moved = parse_programs(supervisor.main())
    with pytest.raises(AssertionError, match="order-web: supervisor binds port 9101"):
        check_web_ports(compose, moved)
