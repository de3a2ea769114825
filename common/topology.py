"""The RabbitMQ topology, declared by code (idempotently) at start (SPEC §3).

saga.events (topic, alternate-exchange saga.unroutable)
  ├─ <service>.events   bound to the routing keys of the service's handlers
  │     dead-letters to <service>.parked (safety net for rejected messages)
  └─ (no binding) ─→ saga.unroutable (fanout) ─→ saga.unroutable queue
<service>.retry (direct) ─→ <service>.retry.<delay> (TTL = delay)
      └─ dead-letters via the default exchange to <service>.events only
<service>.parked (fanout) ─→ <service>.parked queue (operators look here)
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

    @property
    def tiers(self) -> list[str]:
        return [q.routing_key for q in self.retry_queues]

    def all_queues(self) -> list[Queue]:
        return [self.events_queue, *self.retry_queues, self.parked_queue]


def service_topology(
    service: str, routing_keys: list[str], retry_delays_ms: list[int], queue_type: str = "classic"
) -> ServiceTopology:
    if not routing_keys:
        raise ValueError(f"service {service!r} registers no handlers: nothing to bind")
    events_name = f"{service}.events"
    parked_exchange = Exchange(f"{service}.parked", type="fanout", durable=True)
    events_queue = Queue(
        events_name,
        bindings=[binding(EVENTS_EXCHANGE, routing_key=key) for key in routing_keys],
        durable=True,
        queue_arguments={"x-queue-type": queue_type, "x-dead-letter-exchange": parked_exchange.name},
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
    return ServiceTopology(service, events_queue, retry_exchange, retry_queues, parked_exchange, parked_queue)


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
