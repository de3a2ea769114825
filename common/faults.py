"""Fault injection, off by default: crash or raise at named points, with a probability.

Configured by ``SAGA_FAULTS`` (environment) and/or the JSON file named by
``SAGA_FAULTS_FILE`` (re-read when it changes, so tests and the chaos harness
can switch faults on and off in running processes). The format of both is a
comma-separated list of ``[service/]point[:EventType]=action[@probability]``, e.g.

    SAGA_FAULTS="inventory/consumer.before_commit=crash@0.2,relay.after_publish=raise"
    SAGA_FAULTS="shipping/consumer.before_commit:PaymentCompleted=raise"

Actions: ``crash`` (the process SIGKILLs itself: no cleanup, no ack) and
``raise`` (an ``InjectedFault`` exception). Points:

- ``consumer.before_commit``: inside the handler's transaction, after the effect.
- ``consumer.after_commit``: after the commit, before the broker ack.
- ``relay.after_publish``: the relay published a batch, before marking it published.
"""

from __future__ import annotations

import logging
import os
import random
import signal
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

POINTS = ("consumer.before_commit", "consumer.after_commit", "relay.after_publish")
ACTIONS = ("crash", "raise")


class InjectedFault(RuntimeError):
    """Raised at a fault point configured with the ``raise`` action."""


@dataclass(frozen=True)
class Fault:
    service: str | None
    point: str
    action: str
    probability: float
    event_type: str | None = None


def parse(spec: str) -> list[Fault]:
    faults = []
    for item in (part.strip() for part in spec.split(",")):
        if not item:
            continue
        target, sep, rest = item.partition("=")
        if not sep:
            raise ValueError(f"fault {item!r}: expected [service/]point[:EventType]=action[@probability]")
        service, _, point = target.rpartition("/")
        point, _, event_type = point.partition(":")
        action, _, prob = rest.partition("@")
        if point not in POINTS:
            raise ValueError(f"fault {item!r}: unknown point {point!r}; known: {', '.join(POINTS)}")
        if action not in ACTIONS:
            raise ValueError(f"fault {item!r}: unknown action {action!r}; known: crash, raise")
        probability = float(prob) if prob else 1.0
        if not 0.0 <= probability <= 1.0:
            raise ValueError(f"fault {item!r}: probability must be within 0..1")
        faults.append(Fault(service or None, point, action, probability, event_type or None))
    return faults


class _Config:
    def __init__(self) -> None:
        self._env = parse(os.environ.get("SAGA_FAULTS", ""))
        self._file = os.environ.get("SAGA_FAULTS_FILE")
        self._file_mtime: float | None = None
        self._file_faults: list[Fault] = []

    def faults(self) -> list[Fault]:
        if self._file:
            path = Path(self._file)
            try:
                mtime = path.stat().st_mtime
            except FileNotFoundError:
                self._file_mtime, self._file_faults = None, []
            else:
                if mtime != self._file_mtime:
                    try:
                        self._file_faults = parse(path.read_text())
                    except ValueError:
                        log.exception("ignoring invalid fault file %s", path)
                        self._file_faults = []
                    self._file_mtime = mtime
        return self._env + self._file_faults


_config: _Config | None = None


def point(name: str, *, service: str, event_type: str | None = None) -> None:
    """Maybe inject a fault at ``name``; a no-op unless configured."""
    global _config  # noqa: PLW0603 - one lazily built config per process
    if _config is None:
        _config = _Config()
    for fault in _config.faults():
        if fault.point != name or (fault.service and fault.service != service):
            continue
        if fault.event_type and fault.event_type != event_type:
            continue
        if random.random() >= fault.probability:  # noqa: S311 - not cryptographic
            continue
        log.warning("fault injection: %s at %s in %s", fault.action, name, service)
        if fault.action == "crash":
            os.kill(os.getpid(), signal.SIGKILL)
        raise InjectedFault(f"injected fault at {name} in {service}")
