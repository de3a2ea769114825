"""Operating the local stack from Python: supervisor, RabbitMQ, PostgreSQL, fault injection.

What the tools (``make chaos``, ``make bench``, ``make demo``) and the end-to-end tests
both do to the stack that ``make up`` runs. Each call runs the project's own commands
(``scripts/stack.sh ctl`` is ``make ctl``; ``manage.py``; ``psql`` as the postgres user)
and raises :class:`StackError` with their output when they fail.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from kombu import Connection

from common.services import SERVICES

ROOT = Path(__file__).resolve().parent.parent
BROKER_URL = os.environ.get("SAGA_BROKER_URL", "amqp://saga:saga@127.0.0.1:5672/saga")
FAULTS_FILE = ROOT / "var" / "faults"  # re-read by every process when it changes (common/messaging/faults.py)
DATABASES = tuple(f"saga_{service}" for service in SERVICES)


class StackError(RuntimeError):
    """A command run against the stack failed; the message carries its output."""


def _run(command: list[str], what: str, *, timeout: float = 120) -> str:
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    if result.returncode != 0:
        raise StackError(f"{what} failed: {result.stdout}{result.stderr}")
    return result.stdout


def ctl(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """``make ctl ARGS=...``: supervisorctl of the running stack."""
    result = subprocess.run(
        [str(ROOT / "scripts" / "stack.sh"), "ctl", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if check and result.returncode != 0:
        raise StackError(f"supervisorctl {' '.join(args)} failed: {result.stdout}{result.stderr}")
    return result


def pid(program: str) -> int:
    """The PID of a supervised program (``order-worker``), 0 while it is down."""
    return int(ctl("pid", program, check=False).stdout.strip() or 0)


def manage(service: str, *args: str) -> str:
    """``./manage.py <service> <args>``; its standard output."""
    return _run(
        [sys.executable, str(ROOT / "manage.py"), service, *args], f"manage.py {service} {' '.join(args)}"
    )


def rabbitmqctl(*args: str) -> str:
    """``make rabbitmqctl ARGS=...``: our RabbitMQ node's rabbitmqctl."""
    return _run([str(ROOT / "scripts" / "stack.sh"), "rabbitmqctl", *args], f"rabbitmqctl {' '.join(args)}")


def queue_depth(queue: str) -> int:
    """Messages ready in ``queue`` right now (a passive declare, not the sampled stats)."""
    with Connection(BROKER_URL) as conn:
        return conn.default_channel.queue_declare(queue=queue, passive=True).message_count


def sql(query: str, *, database: str = "postgres") -> str:
    """Run ``query`` as the postgres superuser (psql, unaligned); its output."""
    return _run(
        ["runuser", "-u", "postgres", "--", "psql", "-d", database, "-qAtc", query],
        f"psql -d {database}",
        timeout=60,
    ).strip()


def terminate_db_connections() -> int:
    """``pg_terminate_backend`` every connection to the four services' databases; how many."""
    names = ",".join(f"'{name}'" for name in DATABASES)
    return int(
        sql(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            f"WHERE datname IN ({names}) AND pid <> pg_backend_pid()"
        )
        or 0
    )


def set_faults(spec: str) -> None:
    """Switch fault injection on in every running process (``[service/]point=action``, see
    common/messaging/faults.py); written whole, so that no process reads half a file."""
    tmp = FAULTS_FILE.with_suffix(".tmp")
    tmp.write_text(spec)
    tmp.replace(FAULTS_FILE)


def clear_faults() -> None:
    FAULTS_FILE.unlink(missing_ok=True)


@contextlib.contextmanager
def faults(spec: str) -> Iterator[None]:
    """Fault injection on for the ``with`` block, off after it whatever happens."""
    set_faults(spec)
    try:
        yield
    finally:
        clear_faults()
