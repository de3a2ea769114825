"""The RabbitMQ topology, declared by code (idempotently) at start (SPEC §3).

saga.events (topic, alternate-exchange saga.unroutable)
  ├─ <service>.events   bound to the routing keys of the service's handlers
  │     dead-letters to <service>.parked (safety net for rejected messages)
  └─ (no binding) ─→ saga.unroutable (fanout) ─→ saga.unroutable queue
<service>.retry (direct) ─→ <service>.retry.<delay> (TTL = delay)
      └─ dead-letters via the default exchange to <service>.events only
<service>.parked (fanout) ─→ <service>.parked queue (operators look here)

Queue type (``SAGA_QUEUE_TYPE``): ``classic`` (one node, the local stack) or ``quorum``
(replicated, for a cluster). Quorum queues dead-letter *at least once*: the source
queue keeps a dead-lettered message until the target confirmed it (RabbitMQ 3.10+;
it needs ``x-overflow=reject-publish``), so a tier's expiry or a parked message
cannot be lost on the way. The events queue also gets a delivery limit: a message
redelivered that many times (it keeps killing its worker, or keeps being requeued)
is dead-lettered into ``<service>.parked`` like any other, with its ``x-death``
history, instead of looping forever. The arguments of a queue are fixed when it is
first declared: switching an existing broker from one type to the other means
deleting the queues first (RabbitMQ answers PRECONDITION_FAILED otherwise).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kombu import Exchange, Queue, binding

EVENTS_EXCHANGE = Exchange(
    "saga.events", type="topic", durable=True, arguments={"alternate-exchange": "saga.unroutable"}
)
UNROUTABLE_EXCHANGE = Exchange("saga.unroutable", type="fanout", durable=True)
UNROUTABLE_QUEUE = Queue("saga.unroutable", exchange=UNROUTABLE_EXCHANGE, durable=True)


QUEUE_TYPES = ("classic", "quorum")
# Deliveries of one message from <service>.events before the broker parks it. Far above what
# crashes and reconnects cost a healthy message (each returns a worker's whole prefetch),
# low enough that a message killing its worker every time is parked within minutes.
DEFAULT_DELIVERY_LIMIT = 20
# Safe dead-lettering on quorum queues (RabbitMQ 3.10+; at-least-once needs reject-publish).
AT_LEAST_ONCE = {"x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish"}


def checked_queue_type(queue_type: str) -> str:
    """``queue_type`` if RabbitMQ's and our code's support it; a clear error otherwise."""
    if queue_type not in QUEUE_TYPES:
        raise ValueError(
            f"SAGA_QUEUE_TYPE must be 'classic' or 'quorum', not {queue_type!r} "
            "(classic: one node, the local stack; quorum: a cluster)"
        )
    return queue_type


def checked_delivery_limit(limit: object) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"SAGA_DELIVERY_LIMIT must be a whole number of deliveries >= 1, not {limit!r}")
    return limit


def configured_delivery_limit() -> int:
    """``settings.SAGA_DELIVERY_LIMIT`` when Django is configured, else the default."""
    try:
        from django.conf import settings
    except ImportError:  # pragma: no cover - Django is a dependency; plain-kombu use still works
        return DEFAULT_DELIVERY_LIMIT
    if not settings.configured:
        return DEFAULT_DELIVERY_LIMIT
    return checked_delivery_limit(getattr(settings, "SAGA_DELIVERY_LIMIT", DEFAULT_DELIVERY_LIMIT))


def tier_name(delay_ms: int) -> str:
    return f"{delay_ms // 1000}s" if delay_ms % 1000 == 0 else f"{delay_ms}ms"


@dataclass(frozen=True)
class ServiceTopology:
    service: str
    events_queue: Queue
    retry_exchange: Exchange
    retry_queues: tuple[Queue, ...]
    parked_exchange: Exchange
    parked_queue: Queue
    retired_keys: tuple[str, ...] = ()  # routing keys the events queue is unbound from

    @property
    def tiers(self) -> list[str]:
        return [q.routing_key for q in self.retry_queues]

    def all_queues(self) -> list[Queue]:
        return [self.events_queue, *self.retry_queues, self.parked_queue]


def service_topology(
    service: str,
    routing_keys: list[str],
    retry_delays_ms: list[int],
    queue_type: str = "classic",
    delivery_limit: int | None = None,
    retired_keys: tuple[str, ...] = (),
) -> ServiceTopology:
    """The service's queues; ``delivery_limit`` (quorum only) defaults to the setting."""
    if not routing_keys:
        raise ValueError(f"service {service!r} registers no handlers: nothing to bind")
    quorum = checked_queue_type(queue_type) == "quorum"
    # Classic queues keep exactly the arguments they always had: a broker that declared
    # them refuses a redeclaration with different ones (PRECONDITION_FAILED).
    dead_lettering = AT_LEAST_ONCE if quorum else {}
    events_arguments: dict[str, Any] = {}
    if quorum:
        limit = configured_delivery_limit() if delivery_limit is None else delivery_limit
        events_arguments["x-delivery-limit"] = checked_delivery_limit(limit)
    events_name = f"{service}.events"
    parked_exchange = Exchange(f"{service}.parked", type="fanout", durable=True)
    events_queue = Queue(
        events_name,
        bindings=[binding(EVENTS_EXCHANGE, routing_key=key) for key in routing_keys],
        durable=True,
        queue_arguments={
            "x-queue-type": queue_type,
            "x-dead-letter-exchange": parked_exchange.name,
            **dead_lettering,
            **events_arguments,
        },
    )
    retry_exchange = Exchange(f"{service}.retry", type="direct", durable=True)
    retry_queues = tuple(
        Queue(
            f"{service}.retry.{tier_name(delay)}",
            exchange=retry_exchange,
            routing_key=tier_name(delay),
            durable=True,
            queue_arguments={
                "x-queue-type": queue_type,
                "x-message-ttl": delay,
                "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": events_name,
                **dead_lettering,
            },
        )
        for delay in retry_delays_ms
    )
    parked_queue = Queue(
        f"{service}.parked",
        exchange=parked_exchange,
        durable=True,
        queue_arguments={"x-queue-type": queue_type},
    )
    return ServiceTopology(
        service,
        events_queue,
        retry_exchange,
        retry_queues,
        parked_exchange,
        parked_queue,
        tuple(retired_keys),
    )


def declare_shared(channel: Any) -> None:
    UNROUTABLE_EXCHANGE.declare(channel=channel)
    UNROUTABLE_QUEUE(channel).declare()
    EVENTS_EXCHANGE.declare(channel=channel)


def declare_service(channel: Any, topology: ServiceTopology) -> None:
    declare_shared(channel)
    topology.retry_exchange.declare(channel=channel)
    topology.parked_exchange.declare(channel=channel)
    for queue in topology.all_queues():
        queue(channel).declare()
    events = topology.events_queue(channel)
    for key in topology.retired_keys:  # a subscription the service gave up (unbinding twice is harmless)
        events.unbind_from(EVENTS_EXCHANGE, routing_key=key)
