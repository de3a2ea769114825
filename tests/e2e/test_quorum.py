"""The stack on quorum queues (as on a cluster): `make test` runs the saga paths once more
with SAGA_QUEUE_TYPE=quorum on the vhost saga_quorum (scripts/test.sh, stage "quorum"),
and this checks that the queues it ran on really were quorum queues with safe
dead-lettering (common/messaging/topology.py)."""

from __future__ import annotations

import json
import os

import pytest

from common.services import SERVICES
from tests.support import rabbitmqctl

pytestmark = pytest.mark.skipif(
    os.environ.get("SAGA_QUEUE_TYPE") != "quorum",
    reason="runs in make test's quorum stage (scripts/test.sh quorum), against a quorum stack",
)


def queues() -> dict[str, dict]:
    vhost = os.environ.get("SAGA_BROKER_VHOST", "saga")
    listed = json.loads(
        rabbitmqctl("-q", "list_queues", "-p", vhost, "name", "type", "arguments", "--formatter", "json")
    )
    return {
        q["name"]: {"type": q["type"], **{name: value for name, _, value in q["arguments"]}} for q in listed
    }


@pytest.mark.parametrize("service", SERVICES)
def test_the_service_queues_are_quorum_queues_with_safe_dead_lettering(service: str) -> None:
    found = queues()
    events = found[f"{service}.events"]
    assert events["type"] == "quorum"
    assert events["x-dead-letter-exchange"] == f"{service}.parked"
    assert events["x-dead-letter-strategy"] == "at-least-once"
    assert events["x-overflow"] == "reject-publish"
    assert events["x-delivery-limit"] == 20
    tiers = [q for name, q in found.items() if name.startswith(f"{service}.retry.")]
    assert tiers
    for tier in tiers:
        assert tier["type"] == "quorum"
        assert (tier["x-dead-letter-routing-key"], tier["x-dead-letter-strategy"]) == (
            f"{service}.events",
            "at-least-once",
        )
    assert found[f"{service}.parked"]["type"] == "quorum"
    assert found[f"{service}.tasks"]["type"] == "quorum"  # Celery's queue (the deadline sweep) too
