"""Housekeeping of the inbox and outbox (common/messaging/purge.py) on the Order service's PostgreSQL.

The rule under test: an inbox row outlives its event by the sum of the retry delays
plus the replay margin, because a copy arriving inside that window must still be
absorbed; a published outbox row lives its own retention, an unpublished one forever.
Rows are aged with an UPDATE on the database's clock, the one the purge's cutoff uses.
"""

from __future__ import annotations

import itertools
import math
import uuid
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext

from common.messaging.broker import BatchPublisher
from common.messaging.consumer import Disposition
from common.messaging.models import InboxMessage, OutboxMessage, ParkedAction, ParkedMessage, ParkedStatus
from common.messaging.purge import _DELETE, PeriodicPurge, Retention, purge
from common.messaging.relay import Relay
from order_svc.orders.models import Order
from tests.events import deliver, envelope, outbox_types
from tests.order.orders import place, reserved
from tests.unit.test_purge_window import FakeClock
from tests.unit.test_purge_window import result as done

MARGIN = 60.0  # seconds either side of a limit: far more than the test's own duration


def window() -> float:
    return Retention.from_settings().inbox_seconds


def outbox_retention() -> float:
    return Retention.from_settings().outbox_seconds


def sql(statement: str, params: list | None = None) -> None:
    with connection.cursor() as cursor:
        cursor.execute(statement, params or [])


def add_inbox_rows(count: int, *, age: float) -> None:
    sql(
        "INSERT INTO messaging_inbox (event_id, event_type, saga_id, producer, received_at)"
        " SELECT gen_random_uuid(), 'PaymentCompleted', gen_random_uuid(), 'payment',"
        " now() - make_interval(secs => %s) FROM generate_series(1, %s)",
        [age, count],
    )


def add_outbox_rows(count: int, *, age: float | None, created_age: float = 0.0) -> None:
    """``count`` rows published ``age`` seconds ago (None: unpublished), created ``created_age`` ago."""
    sql(
        "INSERT INTO messaging_outbox (event_id, event_type, routing_key, saga_id, body, created_at,"
        " published_at, publish_attempts, last_error)"
        " SELECT gen_random_uuid(), 'OrderPlaced', 'order.placed', gen_random_uuid(), '{}',"
        " now() - make_interval(secs => %s),"
        " CASE WHEN %s::float8 IS NULL THEN NULL ELSE now() - make_interval(secs => %s) END, 0, ''"
        " FROM generate_series(1, %s)",
        [max(created_age, age or 0.0), age, age, count],
    )


def age_inbox_row(event_id: str, seconds: float) -> None:
    sql(
        "UPDATE messaging_inbox SET received_at = now() - make_interval(secs => %s) WHERE event_id = %s",
        [seconds, event_id],
    )


def inbox_has(event_id: str) -> bool:
    return InboxMessage.objects.filter(event_id=event_id).exists()


def effects(order: Order) -> tuple:
    """Everything a second handling of an event could change in the Order service."""
    fresh = Order.objects.get(id=order.id)
    return (
        fresh.status,
        fresh.total,
        sorted(fresh.lines.values_list("sku", "unit_price")),
        outbox_types(str(order.id)),
        fresh.timeline.count(),
        InboxMessage.objects.count(),
    )


# -- inbox ---------------------------------------------------------------------------
def test_the_default_window_is_the_retry_tiers_plus_a_week(settings) -> None:
    settings.SAGA_RETRY_DELAYS_MS = [1000, 5000, 30_000]  # the defaults (make test runs shorter tiers)
    retention = Retention.from_settings()
    assert retention.replay_margin_seconds == 7 * 24 * 3600
    assert retention.inbox_seconds == 36 + 7 * 24 * 3600  # tiers 1 s + 5 s + 30 s


@pytest.mark.django_db(transaction=True)
def test_inbox_rows_beyond_the_window_are_deleted_and_rows_inside_kept() -> None:
    add_inbox_rows(3, age=window() + MARGIN)
    add_inbox_rows(2, age=window() - MARGIN)
    add_inbox_rows(1, age=0)
    result = purge()
    assert (result.inbox.deleted, result.finished) == (3, True)
    assert InboxMessage.objects.count() == 3


@pytest.mark.django_db(transaction=True)
def test_a_redelivery_inside_the_window_is_still_absorbed() -> None:
    order = place()
    event = reserved(str(order.id))
    assert deliver(event).disposition is Disposition.HANDLED
    after_first = effects(order)
    age_inbox_row(event.event_id, window() - MARGIN)  # the copy comes back just in time
    purge()
    assert inbox_has(event.event_id)
    assert deliver(event).disposition is Disposition.DUPLICATE
    assert effects(order) == after_first


@pytest.mark.django_db(transaction=True)
def test_a_redelivery_beyond_the_window_is_no_longer_recognised() -> None:
    """The counterpart of the test above: the purge really deletes, so that one can fail."""
    order = place()
    event = envelope("PaymentCompleted", str(order.id), {"customer_id": "alice", "amount": "7.00"})
    assert deliver(event).disposition is Disposition.HANDLED
    age_inbox_row(event.event_id, window() + MARGIN)
    assert purge().inbox.deleted == 1
    assert not inbox_has(event.event_id)
    assert deliver(event).disposition is Disposition.HANDLED  # what the window exists to prevent


def parked_copy(event_id: str, status: str = ParkedStatus.PARKED) -> ParkedMessage:
    return ParkedMessage.objects.create(
        delivery_key=uuid.uuid4().hex,
        event_id=event_id,
        event_type="PaymentCompleted",
        reason="retries exhausted",
        body=b"{}",
        status=status,
    )


@pytest.mark.django_db(transaction=True)
def test_a_copy_still_parked_or_replayed_recently_keeps_the_inbox_row_beyond_the_window() -> None:
    parked, replayed, replayed_long_ago, discarded = (str(uuid.uuid4()) for _ in range(4))
    for event_id in (parked, replayed, replayed_long_ago, discarded):
        sql(
            "INSERT INTO messaging_inbox (event_id, event_type, saga_id, producer, received_at)"
            " VALUES (%s, 'PaymentCompleted', gen_random_uuid(), 'payment',"
            " now() - make_interval(secs => %s))",
            [event_id, window() * 3],
        )
    parked_copy(parked)
    ParkedAction.objects.create(
        message=parked_copy(replayed, ParkedStatus.REPLAYED), action="replay", operator="t"
    )
    old = ParkedAction.objects.create(
        message=parked_copy(replayed_long_ago, ParkedStatus.REPLAYED), action="replay", operator="t"
    )
    sql(
        "UPDATE messaging_parked_action SET at = now() - make_interval(secs => %s) WHERE id = %s",
        [window() + MARGIN, old.id],
    )
    parked_copy(discarded, ParkedStatus.DISCARDED)
    assert purge().inbox.deleted == 2
    assert {str(e) for e in InboxMessage.objects.values_list("event_id", flat=True)} == {parked, replayed}


# -- outbox --------------------------------------------------------------------------
@pytest.mark.django_db(transaction=True)
def test_published_outbox_rows_beyond_their_retention_are_deleted_unpublished_never() -> None:
    add_outbox_rows(4, age=outbox_retention() + MARGIN)
    add_outbox_rows(2, age=outbox_retention() - MARGIN, created_age=outbox_retention() * 10)
    add_outbox_rows(3, age=None, created_age=window() * 10)  # owed to the others for months
    result = purge()
    assert result.outbox.deleted == 4
    assert OutboxMessage.objects.filter(published_at__isnull=False).count() == 2
    assert OutboxMessage.objects.filter(published_at__isnull=True).count() == 3


# -- batches -------------------------------------------------------------------------
@pytest.mark.django_db(transaction=True)
def test_one_run_deletes_more_than_a_batch_in_several_statements() -> None:
    add_inbox_rows(250, age=window() + MARGIN)
    add_outbox_rows(120, age=outbox_retention() + MARGIN)
    add_inbox_rows(5, age=0)
    with CaptureQueriesContext(connection) as queries:
        result = purge(batch=100, time_budget=math.inf)
    deletes = [q["sql"] for q in queries if q["sql"].startswith("DELETE")]
    assert (result.inbox.deleted, result.inbox.statements) == (250, 3)  # 100 + 100 + 50
    assert (result.outbox.deleted, result.outbox.statements) == (120, 2)
    assert len(deletes) == 5
    assert all("LIMIT 100" in d for d in deletes)
    assert (InboxMessage.objects.count(), OutboxMessage.objects.count()) == (5, 0)


@pytest.mark.django_db(transaction=True)
def test_a_run_stops_between_batches_when_its_time_budget_is_spent() -> None:
    add_inbox_rows(250, age=window() + MARGIN)
    add_outbox_rows(150, age=outbox_retention() + MARGIN)
    clock = FakeClock()

    def slow_clock() -> float:
        clock.now += 1.0  # every look at the clock: one second later
        return clock.now

    # started at 1001, deadline 1002.5: the inbox's 2nd batch ends at 1003, the outbox's 1st at 1004
    result = purge(batch=100, time_budget=1.5, clock=slow_clock)
    assert (result.inbox.deleted, result.inbox.finished) == (200, False)
    assert (result.outbox.deleted, result.outbox.finished) == (100, False)  # one batch, still
    assert not result.finished
    assert purge(batch=100, time_budget=math.inf).deleted == 100  # the next run takes the rest


@pytest.mark.django_db(transaction=True)
def test_the_batches_find_old_rows_through_the_purge_indexes() -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname, i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
            " WHERE c.relname = ANY(%s)",
            [["messaging_inbox_received_at_idx", "messaging_outbox_published_at_idx"]],
        )
        assert dict(cursor.fetchall()) == {
            "messaging_inbox_received_at_idx": True,
            "messaging_outbox_published_at_idx": True,
        }
        cursor.execute("SET enable_seqscan = off")  # tiny test tables: show the index can serve
        try:
            plans = {}
            for table in ("messaging_inbox", "messaging_outbox"):
                cursor.execute("EXPLAIN " + _DELETE[table], {"cutoff": "2020-01-01T00:00:00Z", "batch": 10})
                plans[table] = "\n".join(row[0] for row in cursor.fetchall())
        finally:
            cursor.execute("RESET enable_seqscan")
    assert "messaging_inbox_received_at_idx" in plans["messaging_inbox"]
    assert "messaging_outbox_published_at_idx" in plans["messaging_outbox"]
    assert all("Tid Scan" in plan for plan in plans.values())


# -- the command ---------------------------------------------------------------------
@pytest.mark.django_db(transaction=True)
def test_the_command_dry_run_counts_and_the_real_run_deletes() -> None:
    add_inbox_rows(2, age=window() + MARGIN)
    add_inbox_rows(1, age=window() - MARGIN)
    add_outbox_rows(1, age=outbox_retention() + MARGIN)
    add_outbox_rows(1, age=None)
    out = StringIO()
    call_command("purge", "--dry-run", stdout=out)
    text = out.getvalue()
    assert "would delete 2 inbox row(s)" in text
    assert "would delete 1 outbox row(s)" in text
    assert "unpublished outbox rows: 1, oldest created" in text
    assert (InboxMessage.objects.count(), OutboxMessage.objects.count()) == (3, 2)
    out = StringIO()
    call_command("purge", stdout=out)
    text = out.getvalue()
    assert "deleted 2 inbox row(s)" in text
    assert "deleted 1 outbox row(s)" in text
    assert "oldest inbox row kept: received 20" in text
    assert (InboxMessage.objects.count(), OutboxMessage.objects.count()) == (1, 1)


# -- the relay -----------------------------------------------------------------------
def test_the_relay_purges_when_idle_and_due_never_during_a_backlog(monkeypatch) -> None:
    relay = Relay(publisher=BatchPublisher("amqp://saga:saga@127.0.0.1:1/saga_test"))  # never used
    clock, calls, runs = FakeClock(), [], []
    relay._purge = PeriodicPurge(
        interval=600, run=lambda: runs.append((clock.now, len(calls))) or done(), clock=clock
    )
    published = itertools.chain([0, 0, 0, relay.batch], itertools.repeat(0))  # call 4: more to publish

    def publish_pending() -> int:
        calls.append(clock.now)
        return next(published)

    def wait(timeout: float) -> None:
        clock.now += 250
        if clock.now > 2500:
            relay.stop()

    monkeypatch.setattr(relay, "publish_pending", publish_pending)
    monkeypatch.setattr(relay, "_update_gauges", lambda: None)
    monkeypatch.setattr(relay, "_wait", wait)
    relay.run_forever()
    # Idle passes every 250 s from t=1000. At t=1750 the purge is due but that pass (call 4)
    # published a full batch: the relay publishes on at once, and purges on the next pass.
    assert runs == [(1000.0, 1), (1750.0, 5), (2500.0, 8)]


def test_a_failing_purge_does_not_stop_the_relay(monkeypatch) -> None:
    relay = Relay(publisher=BatchPublisher("amqp://saga:saga@127.0.0.1:1/saga_test"))
    clock, passes = FakeClock(), []

    def broken() -> None:
        raise RuntimeError("purge broke")

    relay._purge = PeriodicPurge(interval=1, run=broken, clock=clock)

    def wait(timeout: float) -> None:
        passes.append(clock.now)
        clock.now += 1
        if len(passes) == 3:
            relay.stop()

    monkeypatch.setattr(relay, "publish_pending", lambda: 0)
    monkeypatch.setattr(relay, "_update_gauges", lambda: None)
    monkeypatch.setattr(relay, "_wait", wait)
    relay.run_forever()
    assert passes == [1000.0, 1001.0, 1002.0]  # every pass waited normally: no relay error backoff
