"""The queue arguments common/messaging/topology.py declares, per SAGA_QUEUE_TYPE (no broker needed).

Classic must stay byte for byte what the running stack declared (a redeclaration with
other arguments fails with PRECONDITION_FAILED); quorum must dead-letter safely and
park a message that keeps coming back instead of dropping it.
"""

from __future__ import annotations

import pytest
from django.conf import settings
from kombu import Queue

from common.messaging.topology import (
    DEFAULT_DELIVERY_LIMIT,
    configured_delivery_limit,
    service_topology,
)

KEYS = ["order.placed", "payment.declined"]
DELAYS = [1000, 5000, 30000]


# What a quorum queue needs to dead-letter without losing a message.
SAFE_DEAD_LETTERING = {"x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish"}


def arguments(queue: Queue) -> dict:
    return dict(queue.queue_arguments or {})


def retry_tiers(topo) -> list[dict]:
    return [arguments(queue) for queue in topo.retry_queues]


def back_to(queue: str, ttl: int) -> dict:
    """A retry tier's arguments: hold a message ``ttl`` ms, then back to ``queue``."""
    return {"x-message-ttl": ttl, "x-dead-letter-exchange": "", "x-dead-letter-routing-key": queue}


def test_classic_arguments_are_exactly_what_the_running_stack_declared() -> None:
    topo = service_topology("inventory", KEYS, DELAYS)
    assert topo == service_topology("inventory", KEYS, DELAYS, "classic")
    assert arguments(topo.events_queue) == {
        "x-queue-type": "classic",
        "x-dead-letter-exchange": "inventory.parked",
    }
    assert retry_tiers(topo) == [
        {"x-queue-type": "classic", **back_to("inventory.events", ttl)} for ttl in DELAYS
    ]
    assert arguments(topo.parked_queue) == {"x-queue-type": "classic"}


def test_classic_ignores_a_delivery_limit() -> None:
    topo = service_topology("inventory", KEYS, DELAYS, "classic", delivery_limit=5)
    assert "x-delivery-limit" not in arguments(topo.events_queue)


def test_quorum_events_queue_parks_a_message_past_the_delivery_limit() -> None:
    topo = service_topology("payment", KEYS, DELAYS, "quorum")
    assert arguments(topo.events_queue) == {
        "x-queue-type": "quorum",
        # past the limit the broker dead-letters it here, into the parking lot, not the void
        "x-dead-letter-exchange": "payment.parked",
        **SAFE_DEAD_LETTERING,
        "x-delivery-limit": DEFAULT_DELIVERY_LIMIT,
    }
    assert topo.parked_exchange.name == "payment.parked"
    assert topo.parked_exchange.type == "fanout"
    assert topo.parked_queue.exchange.name == topo.parked_exchange.name
    assert sorted(b.routing_key for b in topo.events_queue.bindings) == sorted(KEYS)  # a set in kombu


def test_quorum_retry_tiers_dead_letter_at_least_once_to_the_service_queue() -> None:
    topo = service_topology("shipping", KEYS, DELAYS, "quorum")
    assert retry_tiers(topo) == [
        {"x-queue-type": "quorum", **back_to("shipping.events", ttl), **SAFE_DEAD_LETTERING} for ttl in DELAYS
    ]


def test_quorum_parking_lot_is_replicated_and_dead_letters_nowhere() -> None:
    topo = service_topology("order", KEYS, DELAYS, "quorum")
    assert arguments(topo.parked_queue) == {"x-queue-type": "quorum"}


@pytest.mark.parametrize("queue_type", ["classic", "quorum"])
def test_every_service_queue_has_the_configured_type(queue_type: str) -> None:
    topo = service_topology("order", KEYS, DELAYS, queue_type)
    assert {arguments(q)["x-queue-type"] for q in topo.all_queues()} == {queue_type}
    if queue_type == "quorum":
        for queue in topo.all_queues():  # wherever a quorum queue dead-letters, it does so safely
            if "x-dead-letter-exchange" in arguments(queue):
                assert arguments(queue)["x-dead-letter-strategy"] == "at-least-once", queue.name
                assert arguments(queue)["x-overflow"] == "reject-publish", queue.name


@pytest.mark.parametrize("queue_type", ["Quorum", "quorum ", "stream", "", "mirrored"])
def test_an_unknown_queue_type_is_refused_clearly(queue_type: str) -> None:
    with pytest.raises(ValueError, match="SAGA_QUEUE_TYPE must be 'classic' or 'quorum'"):
        service_topology("order", KEYS, DELAYS, queue_type)


def test_an_explicit_delivery_limit_is_used() -> None:
    topo = service_topology("order", KEYS, DELAYS, "quorum", delivery_limit=7)
    assert arguments(topo.events_queue)["x-delivery-limit"] == 7


@pytest.mark.parametrize("limit", [0, -1, 2.5, "20", True])
def test_a_bad_delivery_limit_is_refused(limit: object) -> None:
    with pytest.raises(ValueError, match="SAGA_DELIVERY_LIMIT"):
        service_topology("order", KEYS, DELAYS, "quorum", delivery_limit=limit)  # type: ignore[arg-type]


def test_the_delivery_limit_comes_from_settings_when_configured(monkeypatch) -> None:
    assert not settings.configured  # unit tests run without Django settings
    assert configured_delivery_limit() == DEFAULT_DELIVERY_LIMIT

    class Configured:
        configured = True
        SAGA_DELIVERY_LIMIT = 9

    monkeypatch.setattr("django.conf.settings", Configured())
    assert configured_delivery_limit() == 9
    topo = service_topology("order", KEYS, DELAYS, "quorum")
    assert arguments(topo.events_queue)["x-delivery-limit"] == 9

    class WithoutTheSetting:
        configured = True

    monkeypatch.setattr("django.conf.settings", WithoutTheSetting())
    assert configured_delivery_limit() == DEFAULT_DELIVERY_LIMIT

    Configured.SAGA_DELIVERY_LIMIT = 0
    monkeypatch.setattr("django.conf.settings", Configured())
    with pytest.raises(ValueError, match="SAGA_DELIVERY_LIMIT"):
        service_topology("order", KEYS, DELAYS, "quorum")


def test_workers_do_not_set_up_celerys_delayed_delivery_on_quorum_queues() -> None:
    # Celery would declare 28 celery_delayed_* exchanges and queues, which a service's
    # broker user may not, and log CRITICAL at every worker start (we have no ETA tasks).
    from celery.worker.consumer import Consumer

    from common.messaging.celery import SagaConsumer

    ours = SagaConsumer.Blueprint.default_steps
    theirs = Consumer.Blueprint.default_steps
    assert "celery.worker.consumer.delayed_delivery:DelayedDelivery" in theirs
    assert [step for step in theirs if not step.endswith(":DelayedDelivery")] == ours
