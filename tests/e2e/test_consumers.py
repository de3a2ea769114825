"""Each worker consumes its queues with the prefetch it is configured for, as RabbitMQ sees it."""

from __future__ import annotations

import json
import os

import pytest

from common.services import SERVICES
from tests.support import rabbitmqctl


def prefetch_by_queue() -> dict[str, set[int]]:
    vhost = os.environ.get("SAGA_BROKER_VHOST", "saga")
    columns = ("queue_name", "prefetch_count")
    listed = json.loads(rabbitmqctl("-q", "list_consumers", "-p", vhost, *columns, "--formatter", "json"))
    found: dict[str, set[int]] = {}
    for consumer in listed:
        found.setdefault(consumer["queue_name"], set()).add(consumer["prefetch_count"])
    return found


@pytest.mark.parametrize("service", SERVICES)
def test_the_events_queue_is_consumed_with_the_configured_prefetch(stack: None, service: str) -> None:
    # The parking lot's consumer (prefetch 1) once shared the events consumer's channel, and
    # a basic.qos applies to every consumer started after it on its channel: the events
    # queue ran at prefetch 1, a broker round trip between deliveries (≈ 19 % of the closed
    # loop's throughput, docs/performance.md).
    found = prefetch_by_queue()
    assert found[f"{service}.events"] == {int(os.environ.get("SAGA_PREFETCH", "32"))}
    assert found[f"{service}.parked"] == {1}
