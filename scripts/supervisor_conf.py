#!/usr/bin/env python3
"""Write the supervisord configuration of the local stack (var/supervisord.conf).

Process names follow SPEC §7: ``<service>-web``, ``<service>-worker`` (or
``<service>-worker:<n>`` with several), ``<service>-relay``, ``rabbitmq``, ``flower``.
Worker counts: ``SAGA_<SERVICE>_WORKERS`` (default 1), e.g. SAGA_INVENTORY_WORKERS=4.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from common.services import DEFAULT_PORTS  # noqa: E402 - plain data, no dependency

VAR = ROOT / "var"
VENV = Path(os.environ.get("SAGA_VENV", ROOT / ".venv"))
SERVICES = DEFAULT_PORTS  # service → the port its web answers on unless SAGA_<SERVICE>_PORT says
RABBITMQ_BIN = Path("/usr/lib/rabbitmq/bin")


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "")
    return int(raw) if raw.strip() else default


def rabbitmq_env(
    var: Path = VAR, *, nodename: str = "", address: str = "127.0.0.1", home: str = ""
) -> dict[str, str]:
    """The environment a RabbitMQ node runs with (also used by rabbitmqctl): ``make up``'s
    one node by default, or a node of ``make cluster`` with its own directory and address."""
    rabbit = var / "rabbitmq"
    return {
        "HOME": home or os.environ.get("HOME", "/root"),
        "RABBITMQ_NODENAME": nodename or os.environ.get("SAGA_RABBITMQ_NODENAME", "saga@localhost"),
        "RABBITMQ_NODE_IP_ADDRESS": address,
        "RABBITMQ_NODE_PORT": str(env_int("SAGA_AMQP_PORT", 5672)),
        "RABBITMQ_DIST_PORT": str(env_int("SAGA_RABBITMQ_DIST_PORT", 25672)),
        "ERL_EPMD_ADDRESS": address,
        "RABBITMQ_MNESIA_BASE": str(rabbit / "mnesia"),
        "RABBITMQ_LOG_BASE": str(var / "log" / "rabbitmq"),
        # Erlang writes erl_crash.dump into its working directory otherwise (the checkout).
        "ERL_CRASH_DUMP": str(var / "log" / "rabbitmq" / "erl_crash.dump"),
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(rabbit / "enabled_plugins"),
        "RABBITMQ_CONFIG_FILE": str(rabbit / "rabbitmq.conf"),
        "RABBITMQ_ADVANCED_CONFIG_FILE": str(rabbit / "advanced.config"),
        "RABBITMQ_CONF_ENV_FILE": str(rabbit / "rabbitmq-env.conf"),
        # Erlang schedulers spin while idle, waiting for work: on a small machine shared
        # with PostgreSQL and the services that spinning takes the CPU they need (make bench).
        "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "+sbwt none +sbwtdcpu none +sbwtdio none",
    }


def env_line(values: dict[str, str]) -> str:
    def quoted(value: str) -> str:
        return value.replace("%", "%%").replace('"', '\\"')

    return ",".join(f'{key}="{quoted(value)}"' for key, value in values.items())


def saga_environment() -> dict[str, str]:
    """Our settings from the environment of `make up`, written into every program.

    Written per program (not only inherited from supervisord) so that running
    `make up` again with a changed setting restarts exactly the programs it affects.
    """
    prefixes = ("SAGA_", "SHIPPING_", "OTEL_")
    return {key: value for key, value in sorted(os.environ.items()) if key.startswith(prefixes)}


@dataclass(frozen=True)
class Host:
    """Where the programs of one supervisord run: ``make up``'s one host, or one app host
    of ``make cluster`` (scripts/cluster.py), with its own directory, address and name."""

    var: Path = VAR  # logs, metrics files, the supervisor socket
    bind: str = "127.0.0.1"  # the address the web processes listen on
    node_host: str = "%%h"  # the host part of the Celery workers' node names
    environment: dict[str, str] = field(default_factory=dict)  # added to saga_environment()
    beat: bool = True  # order-beat: once in a whole system
    flower: bool = True
    # make up starts the services itself once they are prepared; a cluster's app host
    # starts them when its supervisord starts, as a machine booting does.
    autostart: bool = False


def default_environment(host: Host, service: str | None = None) -> str:
    values = {**saga_environment(), **host.environment}
    if service:
        values["PROMETHEUS_MULTIPROC_DIR"] = str(host.var / "prometheus" / service)
    return f"environment={env_line(values)}\n" if values else ""


def program(
    name: str,
    command: str,
    *,
    host: Host = Host(),
    numprocs: int = 1,
    autostart: bool | None = None,
    extra: str | None = None,
    service: str | None = None,
) -> str:
    autostart = host.autostart if autostart is None else autostart
    process_name = "%(process_num)d" if numprocs > 1 else "%(program_name)s"
    log = f"{host.var}/log/{name}-%(process_num)d.log" if numprocs > 1 else f"{host.var}/log/{name}.log"
    return f"""
[program:{name}]
command={command}
directory={ROOT}
process_name={process_name}
numprocs={numprocs}
autostart={"true" if autostart else "false"}
autorestart=true
startsecs=2
startretries=100
stopwaitsecs=20
stopasgroup=true
killasgroup=true
redirect_stderr=true
stdout_logfile={log}
stdout_logfile_maxbytes=20MB
stdout_logfile_backups=2
{extra if extra is not None else default_environment(host, service)}"""


def header(host: Host, environment: dict[str, str] | None = None) -> str:
    """supervisord's own sections: its socket, log and the environment every program inherits."""
    inherited = {"PYTHONUNBUFFERED": "1", "SAGA_FAULTS_FILE": str(host.var / "faults"), **(environment or {})}
    return f"""; generated by scripts/supervisor_conf.py — edit that, not this
[unix_http_server]
file={host.var}/run/supervisor.sock
chmod=0700

[supervisord]
logfile={host.var}/log/supervisord.log
pidfile={host.var}/run/supervisord.pid
childlogdir={host.var}/log
nodaemon=false
minfds=4096
environment={env_line(inherited)}

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl=unix://{host.var}/run/supervisor.sock
"""


def service_programs(host: Host, *, admin_broker: str, broker_api: str) -> list[str]:
    """Every service's web, worker(s) and relay on ``host``; order-beat and Flower if it has them.

    ``admin_broker``/``broker_api``: where Flower, an operator's tool, connects as the
    administrator (the services connect as their own users: common/settings.py).
    """
    bin_ = VENV / "bin"
    parts = []
    for service, default_port in SERVICES.items():
        upper = service.upper()
        port = env_int(f"SAGA_{upper}_PORT", default_port)
        workers = env_int(f"SAGA_{upper}_WORKERS", 1)
        web_workers = env_int("SAGA_WEB_PROCESSES", 2)
        parts.append(
            program(
                f"{service}-web",
                f"{bin_}/gunicorn {service}_svc.wsgi -b {host.bind}:{port} -w {web_workers} "
                f"-k gthread --threads 4 --timeout 30 --graceful-timeout 10 "
                f"-c {ROOT}/common/web/gunicorn_conf.py",
                host=host,
                service=service,
            )
        )
        parts.append(
            program(
                f"{service}-worker",
                f"{bin_}/celery -A {service}_svc worker -n {service}-%(process_num)d@{host.node_host} "
                f"--pool=solo -E --without-mingle --without-gossip -l INFO",
                host=host,
                numprocs=workers,
                service=service,
            )
        )
        parts.append(
            program(
                f"{service}-relay", f"{bin_}/python manage.py {service} relay", host=host, service=service
            )
        )
        if service == "order" and host.beat:
            parts.append(
                program(
                    "order-beat",
                    f"{bin_}/celery -A order_svc beat -s {host.var}/run/order-beat-schedule "
                    "--pidfile= -l INFO",
                    host=host,
                    service=service,
                )
            )
    if host.flower:
        flower_port = env_int("SAGA_FLOWER_PORT", 5555)
        parts.append(
            program(
                "flower",
                f"{bin_}/celery --broker={admin_broker} flower --address={host.bind} --port={flower_port} "
                f"--broker_api={broker_api}",
                host=host,
            )
        )
    return parts


def main() -> str:
    """The configuration of ``make up``: RabbitMQ and every service on this one host."""
    host = Host()
    amqp_port = env_int("SAGA_AMQP_PORT", 5672)
    mgmt_port = env_int("SAGA_RABBITMQ_MGMT_PORT", 15672)
    rabbitmq = program(
        "rabbitmq",
        f"{RABBITMQ_BIN}/rabbitmq-server",
        autostart=True,
        extra=f"environment={env_line(rabbitmq_env())}\nstopwaitsecs=60\npriority=1\n",
    )
    services = service_programs(
        host,
        admin_broker=f"amqp://saga:saga@127.0.0.1:{amqp_port}/saga",
        broker_api=f"http://saga:saga@127.0.0.1:{mgmt_port}/api/",
    )
    return "".join([header(host), rabbitmq, *services])


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--rabbitmq-env":
        print("\n".join(f"export {k}='{v}'" for k, v in rabbitmq_env().items()))
    else:
        print(main())
