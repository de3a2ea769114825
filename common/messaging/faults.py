"""Fault injection, off by default: crash or raise at named points, with a probability.

Configured by ``SAGA_FAULTS`` (environment) and/or the JSON file named by
``SAGA_FAULTS_FILE`` (re-read when it changes, so tests and the chaos harness
can switch faults on and off in running processes). The format of both is a
comma-separated list of ``[service/]point[:EventType]=action[@probability]``, e.g.

    SAGA_FAULTS="inventory/consumer.before_commit=crash@0.2,relay.after_publish=raise"
    SAGA_FAULTS="shipping/consumer.before_commit:PaymentCompleted=raise"

Actions: ``crash`` (the process SIGKILLs itself: no cleanup, no ack), ``raise`` (an
``InjectedFault`` exception), and at ``consumer.receive`` only: ``duplicate`` (the
delivery is published once more to the service's own queue, as an at-least-once
broker may do) and ``delay`` (the delivery goes round the first retry tier, attempts
unchanged: it arrives late, after the ones behind it).
Points:

- ``consumer.receive``: a delivery arrived, before anything is done with it.
- ``consumer.before_commit``: inside the handler's transaction, after the effect.
- ``consumer.after_commit``: after the commit, before the broker ack.
- ``outbox.after_commit``: an event's transaction committed, before this process hands it to
  its publisher (common/messaging/direct.py); ``raise`` leaves that event to the relay, as a process
  that died right after its commit would.
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

POINTS = (
    "consumer.receive",
    "consumer.before_commit",
    "consumer.after_commit",
    "outbox.after_commit",
    "relay.after_publish",
)
ACTIONS = ("crash", "raise", "duplicate", "delay")
RECEIVE_ONLY = ("duplicate", "delay")


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
            raise ValueError(f"fault {item!r}: unknown action {action!r}; known: {', '.join(ACTIONS)}")
        if action in RECEIVE_ONLY and point != "consumer.receive":
            raise ValueError(f"fault {item!r}: {action} is only possible at consumer.receive")
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
        if self._file:  # one stat() per call: a changed file applies to the very next delivery
            path = self._file
            try:
                mtime = os.stat(path).st_mtime
            except FileNotFoundError:
                self._file_mtime, self._file_faults = None, []
            else:
                if mtime != self._file_mtime:
                    try:
                        self._file_faults = parse(Path(path).read_text())
                    except ValueError:
                        log.exception("ignoring invalid fault file %s", path)
                        self._file_faults = []
                    self._file_mtime = mtime
        return self._env + self._file_faults


_config: _Config | None = None


def point(name: str, *, service: str, event_type: str | None = None) -> str | None:
    """Maybe inject a fault at ``name``: crash or raise here, or return ``duplicate`` or
    ``delay`` for the caller to act on; None (and nothing happens) unless configured."""
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
        if fault.action in RECEIVE_ONLY:
            return fault.action
        if fault.action == "crash":
            os.kill(os.getpid(), signal.SIGKILL)
        raise InjectedFault(f"injected fault at {name} in {service}")
    return None
