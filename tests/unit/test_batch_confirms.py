"""The relay's batch publisher counts a message confirmed only when the broker acked it.

RabbitMQ acks publisher confirms by delivery tag, one at a time or ``multiple`` (every
tag up to this one), in any mix, and may nack; the bookkeeping is pure logic.
"""

from __future__ import annotations

from common.messaging.broker import BatchPublisher
from common.observability.tracing import trace_id_of


def publisher_with(tags: int) -> BatchPublisher:
    publisher = BatchPublisher("amqp://nobody@127.0.0.1:1/none")  # never connects here
    publisher._tag = tags
    return publisher


def test_multiple_ack_confirms_every_tag_up_to_it() -> None:
    publisher = publisher_with(5)
    publisher._on_ack(3, True)
    assert [publisher._confirmed(t) for t in range(1, 6)] == [True, True, True, False, False]
    publisher._on_ack(5, False)
    assert [publisher._confirmed(t) for t in range(1, 6)] == [True, True, True, False, True]


def test_a_nack_is_never_confirmed_even_after_a_later_multiple_ack() -> None:
    publisher = publisher_with(6)
    publisher._on_ack(2, False)
    publisher._on_nack(4, True)  # nacks 1, 3 and 4; 2 was already acked
    publisher._on_ack(6, True)
    assert [publisher._confirmed(t) for t in range(1, 7)] == [False, True, False, False, True, True]


def test_single_nack_spares_its_neighbours() -> None:
    publisher = publisher_with(3)
    publisher._on_nack(2, False)
    publisher._on_ack(3, True)
    assert [publisher._confirmed(t) for t in range(1, 4)] == [True, False, True]


def test_trace_id_of_reads_w3c_traceparent_and_rejects_garbage() -> None:
    trace = "0af7651916cd43dd8448eb211c80319c"
    assert trace_id_of({"traceparent": f"00-{trace}-b7ad6b7169203331-01"}) == trace
    assert trace_id_of({"traceparent": "garbage"}) == ""
    assert trace_id_of({}) == ""
