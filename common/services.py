"""The platform's four services, and where each answers: the one list.

``manage.py``, the settings, the stack's tools (``scripts/``) and the tests read it. Plain
data with no import beyond the standard library, so that a script can read it before the
virtualenv exists (``python3 -m common.services`` prints the names, for the shell scripts).
"""

from __future__ import annotations

import os
import sys

SERVICES: tuple[str, ...] = ("order", "payment", "inventory", "shipping")
DEFAULT_PORTS: dict[str, int] = {"order": 8001, "payment": 8002, "inventory": 8003, "shipping": 8004}


def port(service: str) -> int:
    """The port ``service``'s web answers on: ``SAGA_<SERVICE>_PORT``, else its default."""
    return int(os.environ.get(f"SAGA_{service.upper()}_PORT", DEFAULT_PORTS[service]))


if __name__ == "__main__":
    sys.stdout.write(" ".join(SERVICES) + "\n")
