"""Which interpreter `make up` makes the virtualenv from (scripts/stack.sh python).

The OS's optimised Python 3.11 ran the services with 13 % less CPU than pyenv's default
build (docs/performance.md), so a new virtualenv is made from it when it can make one.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OS_PYTHON = Path("/usr/bin/python3.11")


def stack(command: str, **env: str) -> subprocess.CompletedProcess:
    """`scripts/stack.sh COMMAND` with ``env`` and without the caller's SAGA_PYTHON."""
    environ = {k: v for k, v in os.environ.items() if k != "SAGA_PYTHON"} | env
    script = str(ROOT / "scripts" / "stack.sh")
    args = ["bash", script, command]
    return subprocess.run(args, env=environ, capture_output=True, text=True, timeout=60, check=True)


def chosen(**env: str) -> str:
    return stack("python", **env).stdout.strip()


def os_python_can_make_a_venv() -> bool:
    if not os.access(OS_PYTHON, os.X_OK):
        return False
    probe = [str(OS_PYTHON), "-c", "import ensurepip, venv"]
    return subprocess.run(probe, check=False, capture_output=True).returncode == 0


def test_saga_python_is_obeyed():
    assert chosen(SAGA_PYTHON="/opt/python/bin/python3.11") == "/opt/python/bin/python3.11"


def test_the_os_python_is_preferred_when_it_can_make_a_venv():
    expected = str(OS_PYTHON) if os_python_can_make_a_venv() else "python3"
    assert chosen() == expected


@pytest.mark.skipif(not os_python_can_make_a_venv(), reason="no /usr/bin/python3.11 with venv here")
def test_the_chosen_python_is_3_11():
    probe = [chosen(), "-c", "import sys; print(sys.version_info[:2])"]
    version = subprocess.run(probe, capture_output=True, text=True, check=True).stdout.strip()
    assert version == "(3, 11)", version
    assert sys.version_info[:2] == (3, 11)


def deps_with_venv(tmp_path: Path, made_from: str) -> subprocess.CompletedProcess:
    """`stack.sh deps` on a virtualenv said to be made from ``made_from`` (requirements current)."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").symlink_to(sys.executable)
    (venv / "pyvenv.cfg").write_text(f"home = {Path(made_from).parent}\nexecutable = {made_from}\n")
    requirements = (ROOT / "requirements.txt").read_bytes()
    (venv / ".requirements.sha").write_text(hashlib.sha256(requirements).hexdigest() + "\n")
    return stack("deps", SAGA_VENV=str(venv))


@pytest.mark.skipif(not os_python_can_make_a_venv(), reason="no /usr/bin/python3.11 with venv here")
def test_a_virtualenv_from_another_python_is_pointed_out(tmp_path):
    done = deps_with_venv(tmp_path, "/opt/elsewhere/bin/python3.11")
    assert "made from /opt/elsewhere/bin/python3.11, not /usr/bin/python3.11" in done.stderr
    assert "rm -rf" in done.stderr


@pytest.mark.skipif(not os_python_can_make_a_venv(), reason="no /usr/bin/python3.11 with venv here")
def test_a_virtualenv_from_the_os_python_is_left_alone(tmp_path):
    done = deps_with_venv(tmp_path, str(OS_PYTHON))
    assert "note:" not in done.stderr
