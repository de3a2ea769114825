"""The event being handled, so that what a handler emits names its cause and trace."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator
from contextvars import ContextVar
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # for annotations only: observability sits below messaging
    from common.messaging.envelope import Envelope

_current_event: ContextVar[Envelope | None] = ContextVar("current_event", default=None)
_current_trace: ContextVar[dict[str, str] | None] = ContextVar("current_trace", default=None)


@contextlib.contextmanager
def handling(envelope: Envelope) -> Iterator[None]:
    token = _current_event.set(envelope)
    try:
        yield
    finally:
        _current_event.reset(token)


@contextlib.contextmanager
def tracing(trace: dict[str, str]) -> Iterator[None]:
    token = _current_trace.set(trace)
    try:
        yield
    finally:
        _current_trace.reset(token)


def current_event() -> Envelope | None:
    return _current_event.get()


def current_tracing() -> dict[str, str] | None:
    """The trace context ``tracing()`` set, if any (work that handles no event)."""
    return _current_trace.get()


def new_traceparent() -> str:
    """A fresh W3C ``traceparent`` (version 00, sampled)."""
    return f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"
