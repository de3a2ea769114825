"""The outbox relay, topology and consumer against a real RabbitMQ (vhost ``saga_test``)."""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from urllib.parse import urlparse

import pytest
from django.db import transaction
from kombu import Connection, Queue
from kombu.exceptions import OperationalError

from common.messaging import direct, faults
from common.messaging.broker import BatchPublisher, Publisher, topology
from common.messaging.consumer import (
    ATTEMPT_HEADER,
    LAST_ERROR_HEADER,
    PARK_REASON_HEADER,
    EventConsumer,
    raw_body,
)
from common.messaging.models import OutboxMessage
from common.messaging.relay import Relay
from common.messaging.signing import SIGNATURE_HEADER
from common.messaging.topology import EVENTS_EXCHANGE, UNROUTABLE_QUEUE, declare_service
from order_svc.orders import services
from tests.events import envelope, signed_as
from tests.support import poll


@pytest.fixture
def broker(settings):
    """A clean view of the test vhost: this service's topology declared, queues purged."""
    # These tests purge queues and publish garbage: never against the running stack's vhost
    # (the stack's workers would consume it). scripts/test.sh points them at saga_test.
    vhost = urlparse(settings.SAGA_BROKER_URL).path.lstrip("/")
    if not vhost.endswith("_test"):
        pytest.exit(
            f"SAGA_BROKER_URL uses vhost {vhost!r}, not a test vhost: run these tests with "
            "scripts/test.sh order (or set SAGA_BROKER_URL to the saga_test vhost)",
            returncode=2,
        )
    with Connection(settings.SAGA_BROKER_URL) as conn:
        channel = conn.channel()
        declare_service(channel, topology())
        for queue in [*topology().all_queues(), UNROUTABLE_QUEUE]:
            queue(channel).purge()
        yield conn


@pytest.fixture
def spy(broker):
    """A private queue bound to order.placed, to see what the relay publishes."""
    queue = Queue(
        f"test.spy.{uuid.uuid4().hex}",
        exchange=EVENTS_EXCHANGE,
        routing_key="order.placed",
        exclusive=True,
        auto_delete=True,
    )
    bound = queue(broker.channel())
    bound.declare()
    return bound


def drain(queue, expected: int, timeout: float = 5.0) -> list:
    """Get messages from ``queue`` until ``expected`` arrived or the deadline passed."""
    import time

    got, deadline = [], time.monotonic() + timeout
    while len(got) < expected and time.monotonic() < deadline:
        message = queue.get(no_ack=True)
        if message is None:
            time.sleep(0.05)
        else:
            got.append(message)
    return got


def place() -> str:
    order, _ = services.order_place(
        customer_id="alice", items=[{"sku": "a", "quantity": 1}], shipping_address={"country": "FR"}
    )
    return str(order.id)


@pytest.mark.django_db(transaction=True)
def test_relay_publishes_persistently_and_marks_published(spy) -> None:
    order_id = place()
    assert Relay().publish_pending() == 1
    [message] = drain(spy, 1)
    assert message.delivery_info["routing_key"] == "order.placed"
    assert message.properties["delivery_mode"] == 2
    assert json.loads(message.body)["saga_id"] == order_id
    row = OutboxMessage.objects.get(saga_id=order_id)
    assert row.published_at is not None
    assert str(row.event_id) == message.properties["message_id"]
    assert Relay().publish_pending() == 0


@pytest.mark.django_db(transaction=True)
def test_relay_publishes_a_backlog_in_one_confirmed_batch_oldest_first(spy) -> None:
    order_ids = [place() for _ in range(5)]
    assert Relay().publish_pending() == 5
    got = [json.loads(m.body)["saga_id"] for m in drain(spy, 5)]
    assert got == order_ids
    assert not OutboxMessage.objects.filter(published_at__isnull=True).exists()


@pytest.fixture(autouse=True)
def relay_publishes(settings) -> None:
    """The relay tests see every row: nothing is published on commit unless a test says so."""
    settings.SAGA_PUBLISH_ON_COMMIT = False


@pytest.fixture
def at_commit(settings, transactional_db) -> None:
    """Events published right after their transaction commits, in transactions that commit."""
    settings.SAGA_PUBLISH_ON_COMMIT = True


def test_publish_on_commit_sends_at_commit_and_marks_the_row(at_commit, spy, settings) -> None:
    order_id = place()
    [message] = drain(spy, 1)  # no relay ran
    assert json.loads(message.body)["saga_id"] == order_id
    assert message.properties["delivery_mode"] == 2
    assert message.headers[SIGNATURE_HEADER].startswith("v1=")
    assert direct.pusher().flush()
    assert OutboxMessage.objects.get(saga_id=order_id).published_at is not None
    assert Relay().publish_pending() == 0


def test_publish_on_commit_sends_a_burst_in_commit_order(at_commit, spy, settings) -> None:
    order_ids = [place() for _ in range(20)]
    got = [json.loads(m.body)["saga_id"] for m in drain(spy, 20)]
    assert got == order_ids
    assert direct.pusher().flush()
    assert not OutboxMessage.objects.filter(published_at__isnull=True).exists()


def test_publish_on_commit_is_never_sent_for_a_rolled_back_transaction(at_commit, spy, settings) -> None:

    def place_then_fail() -> None:
        with transaction.atomic():
            place()
            raise RuntimeError("rolled back")

    with pytest.raises(RuntimeError):
        place_then_fail()
    assert direct.pusher().flush()
    assert drain(spy, 1, timeout=1.0) == []
    assert not OutboxMessage.objects.exists()


class StuckBroker:
    """A publisher whose confirms do not come until the test says so."""

    def __init__(self) -> None:
        self.entered, self.release = threading.Event(), threading.Event()
        self.real = BatchPublisher()

    def publish_batch(self, messages):
        self.entered.set()
        self.release.wait(30)
        return self.real.publish_batch(messages)

    def close(self) -> None:
        self.real.close()


def test_publish_on_commit_never_makes_the_committing_thread_wait_for_the_broker(
    at_commit, spy, settings, monkeypatch
) -> None:
    stuck = StuckBroker()
    monkeypatch.setattr(direct.pusher(), "publisher_factory", lambda: stuck)
    first = place()
    poll(stuck.entered.is_set, bool, timeout=10, what="the pusher to be publishing")
    # The broker holds the pusher up; requests and deliveries go on committing meanwhile.
    second = place()
    assert not stuck.release.is_set()
    assert OutboxMessage.objects.filter(published_at__isnull=True).count() == 2
    stuck.release.set()
    got = [json.loads(m.body)["saga_id"] for m in drain(spy, 2)]
    assert got == [first, second]
    assert direct.pusher().flush()
    assert not OutboxMessage.objects.filter(published_at__isnull=True).exists()


def test_publish_on_commit_survives_a_broker_connection_that_died_while_idle(
    at_commit, spy, settings
) -> None:
    # RabbitMQ drops a connection whose heartbeats it missed (the pusher sits idle between
    # bursts), a restart or a network cut kills it too: the next event must still go at once,
    # on a new connection, not after a back-off and the relay's grace period.
    first = place()
    assert direct.pusher().flush()
    assert [json.loads(m.body)["saga_id"] for m in drain(spy, 1)] == [first]
    dead = direct.pusher()._publisher.connection()
    dead.connection.transport.sock.shutdown(socket.SHUT_RDWR)  # the connection dies under the idle pusher
    started = time.monotonic()
    second = place()
    assert direct.pusher().flush()
    assert direct.pusher()._down_until < started  # no back-off: it reconnected and published
    assert [json.loads(m.body)["saga_id"] for m in drain(spy, 1)] == [second]
    assert OutboxMessage.objects.get(saga_id=second).published_at is not None
    assert direct.pusher()._publisher.connection() is not dead


@pytest.mark.django_db(transaction=True)
def test_an_idle_publisher_answers_heartbeats_and_drops_a_dead_connection(broker) -> None:
    publisher = BatchPublisher()
    live = publisher.connection()
    publisher.keep_alive()
    assert publisher.connection() is live  # nothing wrong: the same connection
    live.connection.transport.sock.shutdown(socket.SHUT_RDWR)
    publisher.keep_alive()
    assert publisher._connection is None  # found dead while idle: reopened on next use
    assert publisher.connection() is not live
    publisher.close()


def test_publish_on_commit_failing_leaves_the_row_to_the_relay_after_the_grace(
    at_commit, spy, settings, monkeypatch
) -> None:
    settings.SAGA_RELAY_GRACE_SECONDS = 3.0
    unreachable = "amqp://saga:saga@127.0.0.1:1/saga_test"  # nothing listens on port 1
    monkeypatch.setattr(direct.pusher(), "publisher_factory", lambda: BatchPublisher(unreachable))
    started = time.monotonic()
    order_id = place()
    assert direct.pusher().flush()  # the attempt failed, quickly
    assert direct.pusher()._down_until > started
    assert OutboxMessage.objects.get(saga_id=order_id).published_at is None
    assert Relay().publish_pending() == 0  # too fresh: maybe being published right now
    # Meanwhile later events are not handed to the pusher one by one: the relay has them.
    later = place()
    assert direct.pusher().flush()

    def unpublished_after_a_relay_pass() -> int:
        Relay().publish_pending()
        return OutboxMessage.objects.filter(published_at__isnull=True).count()

    poll(unpublished_after_a_relay_pass, lambda n: n == 0, timeout=10, what="the relay to take the rows")
    assert time.monotonic() - started >= 2.5
    got = {json.loads(m.body)["saga_id"] for m in drain(spy, 2)}
    assert got == {order_id, later}


def test_a_process_dying_between_commit_and_publish_leaves_the_event_to_the_relay(
    at_commit, spy, settings, monkeypatch
) -> None:
    settings.SAGA_RELAY_GRACE_SECONDS = 0.0
    monkeypatch.setenv("SAGA_FAULTS", "outbox.after_commit=raise")
    monkeypatch.setattr(faults, "_config", None)
    order_id = place()  # committed; the fault stands in for a crash before the hand-over
    assert direct.pusher().flush()
    assert drain(spy, 1, timeout=1.0) == []
    assert Relay().publish_pending() == 1
    [message] = drain(spy, 1)
    assert json.loads(message.body)["saga_id"] == order_id


@pytest.mark.django_db(transaction=True)
def test_relay_crash_between_publish_and_mark_loses_nothing(spy, monkeypatch) -> None:
    order_id = place()
    monkeypatch.setenv("SAGA_FAULTS", "relay.after_publish=raise")
    monkeypatch.setattr(faults, "_config", None)
    with pytest.raises(faults.InjectedFault):
        Relay().publish_pending()
    assert OutboxMessage.objects.get(saga_id=order_id).published_at is None
    monkeypatch.setenv("SAGA_FAULTS", "")
    monkeypatch.setattr(faults, "_config", None)
    assert Relay().publish_pending() == 1
    first, second = drain(spy, 2)
    # The same event twice, same event_id: the consumers' inboxes absorb the copy.
    assert first.body == second.body
    assert OutboxMessage.objects.get(saga_id=order_id).published_at is not None


@pytest.mark.django_db(transaction=True)
def test_relay_keeps_rows_when_the_broker_is_unreachable() -> None:
    order_id = place()
    relay = Relay(publisher=BatchPublisher("amqp://saga:saga@127.0.0.1:1/saga_test"))
    with pytest.raises(OperationalError):
        relay.publish_pending()
    row = OutboxMessage.objects.get(saga_id=order_id)
    assert row.published_at is None


def test_unroutable_event_is_caught_by_the_alternate_exchange(broker) -> None:
    publisher = Publisher()
    try:
        publisher.publish(b'{"nobody": "listens"}', exchange=EVENTS_EXCHANGE, routing_key="nobody.listens")
    finally:
        publisher.close()
    [message] = drain(UNROUTABLE_QUEUE(broker.channel()), 1)
    assert message.delivery_info["routing_key"] == "nobody.listens"


def consume_one(broker, body: bytes, headers: dict | None = None, *, signed: bool = True) -> None:
    """Put ``body`` on order.events (signed by the producer it names, unless not ``signed``), consume it."""
    if signed:
        headers = {SIGNATURE_HEADER: signed_as(body), **(headers or {})}
    publisher = Publisher()
    try:
        publisher.publish(body, exchange="", routing_key=topology().events_queue.name, headers=headers)
    finally:
        publisher.close()
    consumer = EventConsumer()
    with consumer.consumer(broker.channel()):
        broker.drain_events(timeout=5)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"\x00garbage{", "malformed event: body is not valid JSON"),
        (json.dumps({"event_id": "x"}).encode(), "malformed event: envelope is missing field"),
    ],
)
def test_a_malformed_message_is_parked_with_its_reason(broker, body, reason) -> None:
    consume_one(broker, body, headers={"x-origin": "test"}, signed=False)
    [parked] = drain(topology().parked_queue(broker.channel()), 1)
    assert raw_body(parked) == body
    assert parked.headers[PARK_REASON_HEADER].startswith(reason)
    assert parked.headers["x-saga-original-headers"] == {"x-origin": "test"}


@pytest.mark.django_db(transaction=True)
def test_an_event_of_a_type_this_service_does_not_handle_is_parked(broker) -> None:
    event = envelope("OrderCompleted", str(uuid.uuid4()), {})  # emitted by order, never consumed by it
    consume_one(broker, event.to_json().encode())
    [parked] = drain(topology().parked_queue(broker.channel()), 1)
    assert "order has no handler for OrderCompleted" in parked.headers[PARK_REASON_HEADER]


@pytest.mark.django_db(transaction=True)
def test_a_failing_handler_goes_to_the_first_retry_tier_of_this_service(broker) -> None:
    event = envelope("InventoryRejected", str(uuid.uuid4()), {"code": "out_of_stock", "reason": "x"})
    consume_one(broker, event.to_json().encode())  # no such order here: the handler raises
    [retried] = drain(topology().retry_queues[0](broker.channel()), 1)
    assert retried.headers[ATTEMPT_HEADER] == 1
    assert "OrderNotFound" in retried.headers[LAST_ERROR_HEADER]
    assert json.loads(retried.body)["event_id"] == event.event_id


@pytest.mark.django_db(transaction=True)
def test_parked_messages_are_ingested_once_replayed_and_discarded_with_a_record(broker) -> None:
    from common.messaging.models import ParkedAction, ParkedStatus
    from common.messaging.parking import ParkedStateError, parked_discard, parked_ingest, parked_replay

    event = envelope("InventoryRejected", str(uuid.uuid4()), {"code": "out_of_stock", "reason": "x"})
    headers = {
        PARK_REASON_HEADER: "retries exhausted after 4 attempts",
        ATTEMPT_HEADER: 3,
        LAST_ERROR_HEADER: "OrderNotFound: ...",
        "x-saga-park-id": uuid.uuid4().hex,
        "x-saga-original-headers": {"x-origin": "test", ATTEMPT_HEADER: 3},
    }
    first = parked_ingest(body=event.to_json().encode(), headers=headers)
    again = parked_ingest(body=event.to_json().encode(), headers=headers)
    assert first.id == again.id
    assert (first.event_type, str(first.saga_id), first.attempts) == ("InventoryRejected", event.saga_id, 3)

    parked_replay(message_id=first.id, operator="alice")
    [replayed] = drain(topology().events_queue(broker.channel()), 1)
    assert json.loads(raw_body(replayed))["event_id"] == event.event_id
    assert replayed.headers[ATTEMPT_HEADER] == 0  # attempts reset
    assert replayed.headers["x-origin"] == "test"
    with pytest.raises(ParkedStateError, match="already REPLAYED"):
        parked_discard(message_id=first.id, operator="bob")

    garbage = parked_ingest(body=b"\x00\xff", headers={PARK_REASON_HEADER: "malformed event"})
    assert garbage.event_type == ""
    parked_discard(message_id=garbage.id, operator="bob", note="test garbage")
    assert garbage.__class__.objects.get(id=garbage.id).status == ParkedStatus.DISCARDED
    assert [(a.action, a.operator) for a in ParkedAction.objects.order_by("at")] == [
        ("replay", "alice"),
        ("discard", "bob"),
    ]


@pytest.mark.django_db(transaction=True)
def test_admin_lists_parked_messages_and_its_actions_are_recorded(broker, admin_client) -> None:
    from common.messaging.models import ParkedAction, ParkedStatus
    from common.messaging.parking import parked_ingest

    event = envelope("InventoryRejected", str(uuid.uuid4()), {"code": "out_of_stock", "reason": "x"})
    first = parked_ingest(body=event.to_json().encode(), headers={PARK_REASON_HEADER: "retries exhausted"})
    second = parked_ingest(body=b"garbage", headers={PARK_REASON_HEADER: "malformed event: not JSON"})
    page = admin_client.get("/admin/messaging/parkedmessage/")
    assert page.status_code == 200
    assert b"retries exhausted" in page.content
    assert b"malformed event" in page.content
    detail = admin_client.get(f"/admin/messaging/parkedmessage/{second.id}/change/")
    assert detail.status_code == 200
    assert b"garbage" in detail.content
    url = "/admin/messaging/parkedmessage/"
    admin_client.post(url, {"action": "replay", "_selected_action": [first.id]})
    admin_client.post(url, {"action": "discard", "_selected_action": [second.id]})
    first.refresh_from_db()
    second.refresh_from_db()
    assert (first.status, second.status) == (ParkedStatus.REPLAYED, ParkedStatus.DISCARDED)
    assert sorted(ParkedAction.objects.values_list("action", "operator")) == [
        ("discard", "admin"),
        ("replay", "admin"),
    ]
    [replayed] = drain(topology().events_queue(broker.channel()), 1)
    assert json.loads(raw_body(replayed))["event_id"] == event.event_id
