"""deploy/postgres-init.sql, run for real: the compose cluster's database initialisation
cannot be tried here with Docker, so it runs against a throwaway PostgreSQL cluster of the
machine's own PostgreSQL (a Unix socket in a temporary directory, no TCP port), which is
stopped and removed afterwards."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from common.services import SERVICES

ROOT = Path(__file__).resolve().parents[2]
POSTGRES_BIN = Path("/usr/lib/postgresql/15/bin")


def as_postgres(*command: str | Path, check: bool = True) -> str:
    result = subprocess.run(
        ["runuser", "-u", "postgres", "--", *map(str, command)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert not check or result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@pytest.fixture
def throwaway_postgres() -> Iterator[Path]:
    """The socket directory of a fresh PostgreSQL cluster, trusted local connections."""
    if not (POSTGRES_BIN / "initdb").exists():
        pytest.fail(f"PostgreSQL 15 is not installed ({POSTGRES_BIN}); make test installs it")
    base = Path(tempfile.mkdtemp(prefix="saga-initdb-"))
    shutil.chown(base, "postgres")
    data, socket = base / "data", base
    try:
        as_postgres(POSTGRES_BIN / "initdb", "-D", data, "-A", "trust", "-U", "postgres")
        as_postgres(
            POSTGRES_BIN / "pg_ctl", "-D", data, "-w", "-l", base / "log",
            "-o", f"-c listen_addresses='' -k {socket}", "start",
        )  # fmt: skip
        yield socket
    finally:
        as_postgres(POSTGRES_BIN / "pg_ctl", "-D", data, "-m", "immediate", "stop", check=False)
        shutil.rmtree(base, ignore_errors=True)


def test_the_compose_database_init_creates_each_services_role_and_database(throwaway_postgres):
    init = throwaway_postgres / "init.sql"  # where the postgres user can read it
    shutil.copy(ROOT / "deploy" / "postgres-init.sql", init)
    as_postgres("psql", "-h", throwaway_postgres, "-v", "ON_ERROR_STOP=1", "-X", "-q", "-f", init)

    def rows(query: str) -> set[str]:
        return set(as_postgres("psql", "-h", throwaway_postgres, "-X", "-qAt", "-c", query).split())

    expected = {f"saga_{service}" for service in SERVICES}
    login = "SELECT rolname FROM pg_roles WHERE rolcanlogin AND rolcreatedb AND rolname LIKE 'saga%'"
    assert rows(login) == expected
    owned = "SELECT datname || ':' || pg_get_userbyid(datdba) FROM pg_database WHERE datname LIKE 'saga%'"
    assert rows(owned) == {f"{name}:{name}" for name in expected}
    # PUBLIC may not connect: only the owner reaches its service's database.
    public = "SELECT datname FROM pg_database WHERE has_database_privilege('public', oid, 'CONNECT')"
    assert not rows(public) & expected
