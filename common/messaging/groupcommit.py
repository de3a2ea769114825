"""Rows a group-commit transaction writes once, at its end: one statement per table.

A consumer that handles several deliveries in one transaction (common/messaging/consumer.py,
``process_batch``) runs each handler as it would alone. What the handlers add to
append-only tables — outbox rows, the order service's timeline rows — need not be
written one statement per delivery: ``defer(writer, row)`` collects the row while a
batch is open and calls ``writer`` once with all of them, just before the commit
(``write_collected``). Outside a batch it calls ``writer([row])`` at once, so the code
that defers reads the same either way.

A writer may raise: the whole batch then rolls back and its deliveries are handled
again one at a time, where the same writer raises for the one delivery at fault.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import Any, TypeVar

T = TypeVar("T")
Writer = Callable[[list[Any]], Any]

_collected: ContextVar[dict[Writer, list[Any]] | None] = ContextVar("groupcommit_collected", default=None)


@contextlib.contextmanager
def collecting() -> Iterator[None]:
    """While open, ``defer`` collects rows instead of writing them."""
    token = _collected.set({})
    try:
        yield
    finally:
        _collected.reset(token)


def batching() -> bool:
    return _collected.get() is not None


def defer(writer: Callable[[list[T]], Any], row: T) -> Any:
    """Write ``row`` with ``writer`` now (returning what it returns), or at the batch's end (None)."""
    pending = _collected.get()
    if pending is None:
        return writer([row])
    pending.setdefault(writer, []).append(row)
    return None


def write_collected() -> None:
    """Call every writer once with its rows, in the order each was first used."""
    pending = _collected.get()
    while pending:
        writer = next(iter(pending))
        writer(pending.pop(writer))
