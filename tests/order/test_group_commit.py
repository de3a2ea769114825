"""Group commit against a real RabbitMQ (vhost ``saga_test``) and PostgreSQL: several
deliveries in one transaction and one multiple-ack, and what happens when one of them fails.

The consumer runs as in the worker, except that the test plays Celery's event loop: it
reads deliveries into the consumer (``broker.drain_events``) and then runs the loop's
tick, which handles what was collected (common/messaging/consumer.py, ``EventConsumer._on_tick``).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator

import psycopg2
import pytest
from django.db import connection
from kombu.asynchronous import Hub as KombuHub
from kombu.asynchronous.timer import Timer

from common.messaging.broker import Publisher, topology
from common.messaging.consumer import ATTEMPT_HEADER, LAST_ERROR_HEADER, MAX_WAIT_SECONDS, EventConsumer
from common.messaging.envelope import Envelope
from common.messaging.signing import SIGNATURE_HEADER
from common.observability import metrics
from order_svc.orders.models import Order, SagaEvent
from tests.events import envelope, signed_as
from tests.order.orders import place
from tests.order.test_messaging import broker, drain, relay_publishes  # noqa: F401 - fixtures
from tests.support import poll

pytestmark = pytest.mark.django_db(transaction=True)


class Hub:
    """What the consumer uses of kombu's hub: its tick callbacks, nothing scheduled, and a timer
    that never fires (the test runs the tick itself)."""

    def __init__(self) -> None:
        self.on_tick: set = set()
        self._ready: set = set()
        self.timer = Timer()

    def call_later(self, delay: float, callback, *args):
        return self.timer.call_after(delay, callback, args)


def rejected(order_id: str) -> Envelope:
    return envelope("InventoryRejected", order_id, {"code": "out_of_stock", "reason": "none left"})


def publish(events: list[Envelope]) -> None:
    publisher = Publisher()
    try:
        for event in events:
            body = event.to_json().encode()
            publisher.publish(
                body,
                exchange="",
                routing_key=topology().events_queue.name,
                headers={SIGNATURE_HEADER: signed_as(body)},
                message_id=event.event_id,
            )
    finally:
        publisher.close()


@pytest.fixture
def consumer(broker) -> Iterator[EventConsumer]:  # noqa: F811 - the fixture imported above
    consumer = EventConsumer()
    consumer.batch_max = 16
    consumer.attach(Hub())
    yield consumer
    consumer.detach()
    consumer.publisher.close()


def consume_batch(broker, consumer: EventConsumer, count: int) -> None:  # noqa: F811
    """Read ``count`` deliveries into the consumer, then let the event loop tick once."""
    channel = broker.channel()
    with consumer.consumer(channel):
        deadline = time.monotonic() + 10
        while len(consumer.buffered) < count:
            assert time.monotonic() < deadline, f"only {len(consumer.buffered)} of {count} deliveries arrived"
            broker.drain_events(timeout=5)
        consumer._on_tick()
        assert not consumer.buffered
    channel.close()  # anything not acked would now go back to the queue


def counter(metric, *labels: str) -> float:
    return metric.labels(*labels)._value.get()


def queue_is_empty(broker) -> bool:  # noqa: F811
    """Nothing left in order.events (a delivery not acked comes back once its channel closed)."""
    return not drain(topology().events_queue(broker.channel()), 1, timeout=0.5)


def test_a_batch_is_one_transaction_and_one_multiple_ack(broker, consumer) -> None:  # noqa: F811
    orders = [str(place().id) for _ in range(5)]
    acks, committed = counter(metrics.ACKS, "order"), counter(metrics.BATCHES, "order", "committed")
    publish([rejected(order_id) for order_id in orders])

    consume_batch(broker, consumer, 5)

    assert set(Order.objects.filter(id__in=orders).values_list("status", flat=True)) == {"REJECTED"}
    assert counter(metrics.BATCHES, "order", "committed") == committed + 1
    assert counter(metrics.ACKS, "order") == acks + 1  # one basic.ack(multiple=True) for all five
    assert queue_is_empty(broker)


def test_a_batch_never_waits_for_the_event_loops_next_wake_up(broker) -> None:  # noqa: F811
    """kombu's real hub and reader: two deliveries already in the socket when the loop starts.

    The reader reads one per turn; the second is read by its ``call_soon``, so the tick sees
    the reader scheduled again and waits for more, and the hub then polls the (now empty)
    socket with its timers' timeout — a second or more. The batch's deadline timer must bound
    that poll: no poll while deliveries wait may sleep longer than MAX_WAIT_SECONDS.
    """
    orders = [str(place().id) for _ in range(2)]
    publish([rejected(order_id) for order_id in orders])  # queued before the consumer starts
    hub = KombuHub()
    timeouts: list[tuple[float, int]] = []
    consumer = EventConsumer()
    consumer.batch_max = 16
    try:
        broker.transport.register_with_event_loop(broker.connection, hub)
        poll = hub.poller.poll

        def recording_poll(timeout):
            timeouts.append((timeout, len(consumer.buffered)))
            return poll(timeout)

        hub.poller.poll = recording_poll
        consumer.attach(hub)
        channel = broker.channel()
        with consumer.consumer(channel):
            deadline = time.monotonic() + 10
            while Order.objects.filter(id__in=orders, status="REJECTED").count() < 2:
                assert time.monotonic() < deadline, "the batch was never handled"
                hub.run_once()
        waits = [timeout for timeout, buffered in timeouts if buffered]
        assert waits, "no poll ran while deliveries were buffered: the test did not reach the case"
        assert max(waits) <= MAX_WAIT_SECONDS + 0.005, f"polled {max(waits):.3f} s with a batch waiting"
        assert queue_is_empty(broker)
    finally:
        consumer.detach()
        consumer.publisher.close()
        hub.close()


def test_a_failing_delivery_never_fails_the_others(broker, consumer) -> None:  # noqa: F811
    """One delivery's handler raises: the batch rolls back, each is handled on its own, and only
    the failing one goes to the retry tier."""
    orders = [str(place().id) for _ in range(3)]
    nowhere = rejected(str(uuid.uuid4()))  # names no order here: the handler raises OrderNotFound
    split = counter(metrics.BATCHES, "order", "split")
    publish([rejected(orders[0]), nowhere, rejected(orders[1]), rejected(orders[2])])

    consume_batch(broker, consumer, 4)

    assert set(Order.objects.filter(id__in=orders).values_list("status", flat=True)) == {"REJECTED"}
    assert counter(metrics.BATCHES, "order", "split") == split + 1
    [retried] = drain(topology().retry_queues[0](broker.channel()), 1)
    assert retried.properties["message_id"] == nowhere.event_id
    assert retried.headers[ATTEMPT_HEADER] == 1
    assert "OrderNotFound" in retried.headers[LAST_ERROR_HEADER]
    assert queue_is_empty(broker)


def test_a_duplicate_inside_one_batch_has_no_second_effect(broker, consumer) -> None:  # noqa: F811
    order_id = str(place().id)
    event = rejected(order_id)
    duplicates = counter(metrics.DELIVERIES, "order", "InventoryRejected", "duplicate")
    publish([event, rejected(str(place().id)), event])

    consume_batch(broker, consumer, 3)

    assert Order.objects.get(id=order_id).status == "REJECTED"
    assert SagaEvent.objects.filter(event_id=event.event_id).count() == 1
    assert counter(metrics.DELIVERIES, "order", "InventoryRejected", "duplicate") == duplicates + 1
    assert queue_is_empty(broker)


def other_connection() -> psycopg2.extensions.connection:
    settings = connection.settings_dict
    return psycopg2.connect(
        dbname=settings["NAME"],
        user=settings["USER"],
        password=settings["PASSWORD"],
        host=settings["HOST"],
        port=settings["PORT"],
    )


def test_a_lock_timeout_splits_the_batch_and_retries_only_the_blocked_delivery(
    broker,  # noqa: F811
    consumer,
) -> None:
    free, blocked, also_free = (str(place().id) for _ in range(3))
    holder = other_connection()
    try:
        with holder.cursor() as cursor:  # another transaction holds the order's row
            cursor.execute("SELECT 1 FROM orders_order WHERE id = %s FOR UPDATE", [blocked])
        with connection.cursor() as cursor:
            cursor.execute("SET lock_timeout = '300ms'")
        publish([rejected(free), rejected(blocked), rejected(also_free)])

        consume_batch(broker, consumer, 3)

        assert Order.objects.get(id=free).status == Order.objects.get(id=also_free).status == "REJECTED"
        [retried] = drain(topology().retry_queues[0](broker.channel()), 1)
        assert "lock timeout" in retried.headers[LAST_ERROR_HEADER]
        assert Order.objects.get(id=blocked).status == "PENDING"
    finally:
        holder.rollback()
        holder.close()
        with connection.cursor() as cursor:
            cursor.execute("RESET lock_timeout")
    assert queue_is_empty(broker)


def test_a_deadlock_splits_the_batch_and_loses_nothing(broker, consumer) -> None:  # noqa: F811
    """The batch locks order A, then waits for B, which another transaction holds while it
    asks for A: PostgreSQL breaks the cycle by failing the batch (it waited first), and each
    delivery is then handled on its own."""
    first, second = str(place().id), str(place().id)
    other = other_connection()
    waiting = threading.Event()

    def cross() -> None:
        with other.cursor() as cursor:
            cursor.execute("SELECT 1 FROM orders_order WHERE id = %s FOR UPDATE", [second])
            waiting.set()
            watcher = other_connection()
            watcher.autocommit = True
            with watcher.cursor() as look:  # until the batch waits for our lock on the second
                for _ in range(200):
                    look.execute(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                        " AND wait_event_type = 'Lock'"
                    )
                    if look.fetchone()[0]:
                        break
                    time.sleep(0.02)
            watcher.close()
            cursor.execute("SELECT 1 FROM orders_order WHERE id = %s FOR UPDATE", [first])
        other.commit()

    deadlocks = deadlocks_now()
    split = counter(metrics.BATCHES, "order", "split")
    thread = threading.Thread(target=cross)
    thread.start()
    try:
        assert waiting.wait(5)
        publish([rejected(first), rejected(second)])
        consume_batch(broker, consumer, 2)
    finally:
        thread.join(15)
        other.close()

    assert counter(metrics.BATCHES, "order", "split") == split + 1
    assert Order.objects.get(id=first).status == Order.objects.get(id=second).status == "REJECTED"
    assert queue_is_empty(broker)
    poll(deadlocks_now, lambda n: n == deadlocks + 1, timeout=15, what="PostgreSQL to count the deadlock")


def deadlocks_now() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()")
        return cursor.fetchone()[0]
