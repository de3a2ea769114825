from __future__ import annotations

import pytest

from common.messaging import faults
from common.messaging.registry import EventRegistry
from common.messaging.topology import service_topology, tier_name


def test_fault_spec_parses_service_point_action_probability() -> None:
    parsed = faults.parse(
        "inventory/consumer.before_commit=crash@0.25, relay.after_publish=raise,"
        "shipping/consumer.after_commit:PaymentCompleted=raise@0.5"
    )
    assert parsed == [
        faults.Fault("inventory", "consumer.before_commit", "crash", 0.25),
        faults.Fault(None, "relay.after_publish", "raise", 1.0),
        faults.Fault("shipping", "consumer.after_commit", "raise", 0.5, "PaymentCompleted"),
    ]


def test_a_fault_fires_only_where_it_is_aimed(monkeypatch) -> None:
    monkeypatch.setenv("SAGA_FAULTS", "shipping/consumer.before_commit:PaymentCompleted=raise")
    monkeypatch.delenv("SAGA_FAULTS_FILE", raising=False)
    monkeypatch.setattr(faults, "_config", None)
    faults.point("consumer.before_commit", service="shipping", event_type="OrderPlaced")
    faults.point("consumer.before_commit", service="payment", event_type="PaymentCompleted")
    faults.point("consumer.after_commit", service="shipping", event_type="PaymentCompleted")
    with pytest.raises(faults.InjectedFault):
        faults.point("consumer.before_commit", service="shipping", event_type="PaymentCompleted")
    monkeypatch.setattr(faults, "_config", None)


@pytest.mark.parametrize(
    "spec",
    [
        "consumer.before_commit",
        "nowhere=crash",
        "consumer.after_commit=explode",
        "relay.after_publish=raise@2",
    ],
)
def test_bad_fault_specs_are_refused(spec: str) -> None:
    with pytest.raises(ValueError, match="fault"):
        faults.parse(spec)


def test_registry_refuses_two_handlers_and_derives_routing_keys() -> None:
    registry = EventRegistry("x")
    registry.handles("PaymentDeclined")(lambda e: None)
    registry.handles("OrderPlaced", emits=("InventoryReserved",))(lambda e: None)
    with pytest.raises(ValueError, match="two handlers"):
        registry.handles("OrderPlaced")(lambda e: None)
    assert registry.routing_keys == ["order.placed", "payment.declined"]


def test_topology_retry_tiers_dead_letter_to_the_service_queue_only() -> None:
    topo = service_topology("inventory", ["order.placed"], [1000, 5000, 30000])
    assert [q.name for q in topo.retry_queues] == [
        "inventory.retry.1s",
        "inventory.retry.5s",
        "inventory.retry.30s",
    ]
    for queue, ttl in zip(topo.retry_queues, [1000, 5000, 30000], strict=True):
        assert queue.queue_arguments["x-message-ttl"] == ttl
        assert queue.queue_arguments["x-dead-letter-exchange"] == ""
        assert queue.queue_arguments["x-dead-letter-routing-key"] == "inventory.events"
    assert [b.routing_key for b in topo.events_queue.bindings] == ["order.placed"]
    assert topo.events_queue.queue_arguments["x-dead-letter-exchange"] == "inventory.parked"
    assert tier_name(1500) == "1500ms"


def test_a_service_without_handlers_has_no_topology() -> None:
    with pytest.raises(ValueError, match="nothing to bind"):
        service_topology("x", [], [1000])
