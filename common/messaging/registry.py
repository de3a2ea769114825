"""The handler registry: which events a service consumes, emits and compensates.

Each service builds one ``EventRegistry`` in its ``handlers.py``. The queue
bindings (common/messaging/topology.py) and the choreography graph are derived from it, so
the list of event types a service listens to is written exactly once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from common.messaging.envelope import Envelope, routing_key_for

Handler = Callable[[Envelope], None]
BatchLocks = Callable[[list[Envelope]], None]

# Notices the messaging layer of every service emits about a saga (a step that needed
# retries, a step that was parked) for the Order service's timeline. They are
# observability, not choreography: no step depends on them, so the graph leaves them out.
NOTICE_EVENTS = frozenset({"MessageRetried", "MessageParked"})


@dataclass(frozen=True)
class Registration:
    event_type: str
    handler: Handler
    emits: tuple[str, ...] = ()
    compensates: str | None = None
    bound: bool = True


@dataclass
class EventRegistry:
    service: str
    registrations: dict[str, Registration] = field(default_factory=dict)
    origins: dict[str, str] = field(default_factory=dict)
    batch_locks: BatchLocks | None = None

    def originates(self, *event_types: str, by: str) -> None:
        """Declare events this service emits on its own initiative (an API call, a timer)."""
        for event_type in event_types:
            routing_key_for(event_type)
            self.origins[event_type] = by

    def describe(self) -> dict[str, object]:
        """What this service consumes, emits and compensates, as plain data (for the graph)."""
        return {
            "service": self.service,
            "originates": [{"event_type": t, "by": by} for t, by in sorted(self.origins.items())],
            "consumes": [
                {"event_type": r.event_type, "emits": list(r.emits), "compensates": r.compensates}
                for r in sorted(self.registrations.values(), key=lambda r: r.event_type)
                if r.event_type not in NOTICE_EVENTS and r.bound
            ],
            "notices": sorted(t for t in self.registrations if t in NOTICE_EVENTS),
        }

    def handles(
        self,
        event_type: str,
        *,
        emits: tuple[str, ...] = (),
        compensates: str | None = None,
        bind: bool = True,
    ) -> Callable[[Handler], Handler]:
        """Register the decorated function as this service's handler for ``event_type``.

        ``bind=False`` retires a subscription: the handler still takes what is already in
        the queue (and replays from the parking lot), but the queue is unbound from the
        event type (common/messaging/topology.py), so no more arrive, and the graph leaves it out.
        """
        routing_key_for(event_type)  # fails loudly on a badly named event

        def decorator(func: Handler) -> Handler:
            if event_type in self.registrations:
                raise ValueError(f"{self.service}: two handlers for {event_type}")
            self.registrations[event_type] = Registration(event_type, func, emits, compensates, bind)
            return func

        return decorator

    def locks_batch(self, func: BatchLocks) -> BatchLocks:
        """Register ``func(events)``: it locks, in one global order, the rows that the
        handlers of a group-commit batch's events may share across sagas (products,
        accounts). It runs after the sagas' own locks and before any handler, so batches in
        several worker processes never wait on each other in a cycle. A service whose
        handlers touch only rows of their own saga needs none."""
        self.batch_locks = func
        return func

    def get(self, event_type: str) -> Registration | None:
        return self.registrations.get(event_type)

    @property
    def event_types(self) -> list[str]:
        return sorted(self.registrations)

    @property
    def routing_keys(self) -> list[str]:
        """What the service's queue is bound to."""
        return [routing_key_for(t) for t in self.event_types if self.registrations[t].bound]

    @property
    def retired_routing_keys(self) -> list[str]:
        """What the service's queue was once bound to and is unbound from (``bind=False``)."""
        return [routing_key_for(t) for t in self.event_types if not self.registrations[t].bound]
