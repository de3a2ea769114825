"""Errors a service raises that the API layer maps to HTTP statuses, and the state guard."""

from __future__ import annotations

from collections.abc import Mapping


class AlreadyExists(Exception):
    """A create found its natural key taken (→ 409)."""


class IllegalTransition(Exception):
    """A record was asked to move to a state its current state does not allow (→ 409)."""


def require_transition(
    transitions: Mapping[str, frozenset[str]], *, what: str, current: str, to: str
) -> None:
    """The one guard of every state machine (Order, Reservation, Shipment): ``current → to``
    must be listed in ``transitions``, or :class:`IllegalTransition` names both states."""
    if to not in transitions.get(current, frozenset()):
        raise IllegalTransition(f"{what}: cannot go from {current} to {to}")
