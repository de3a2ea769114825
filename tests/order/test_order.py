from __future__ import annotations

import json
import uuid
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import transaction
from django.utils import timezone

from common.messaging.consumer import Disposition
from common.messaging.contracts import validate_payload
from common.messaging.models import OutboxMessage
from common.messaging.outbox import OutsideTransactionError, emit
from common.observability.tracing import trace_id_of
from order_svc.orders import services
from order_svc.orders.models import IllegalTransition, Order, OrderStatus, SagaEvent
from tests.events import deliver, envelope, outbox_events, outbox_types, signed_as
from tests.order.orders import place, reserved
from tests.unavailable import ENDPOINTS, assert_every_endpoint_listed, assert_unavailable


def new_order(**fields) -> Order:
    return Order(
        id=uuid.uuid4(),
        customer_id="c",
        shipping_address={"country": "FR"},
        deadline_at=timezone.now() + timedelta(seconds=30),
        **fields,
    )


# -- model transitions (no database) -------------------------------------------------
@pytest.mark.parametrize(
    ("status", "action"),
    [
        (OrderStatus.COMPLETED, lambda o: o.mark_rejected(reason="x")),
        (OrderStatus.CANCELLED, lambda o: o.mark_completed()),
        (OrderStatus.REJECTED, lambda o: o.start_compensation(reason="x", expected=["InventoryReleased"])),
        (OrderStatus.COMPENSATING, lambda o: o.mark_completed()),
    ],
)
def test_illegal_transitions_raise(status, action) -> None:
    order = new_order(status=status)
    with pytest.raises(IllegalTransition, match=f"cannot go from {status}"):
        action(order)


def test_compensating_until_every_undo_is_confirmed_in_any_order() -> None:
    order = new_order()
    order.confirm_compensation("PaymentRefunded")  # arrives before the failure itself
    assert order.status == OrderStatus.PENDING
    order.start_compensation(reason="AQ", expected=["InventoryReleased", "PaymentRefunded"])
    assert order.status == OrderStatus.COMPENSATING
    assert order.compensations_pending == ["InventoryReleased"]
    order.confirm_compensation("InventoryReleased")
    assert order.status == OrderStatus.CANCELLED
    assert order.finished_at is not None


# -- with the database ---------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_outbox_row_commits_with_the_order_or_not_at_all() -> None:
    def place_then_fail() -> None:
        with transaction.atomic():
            place()
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        place_then_fail()
    assert Order.objects.count() == 0
    assert OutboxMessage.objects.count() == 0
    order = place()
    [event] = outbox_events(str(order.id))
    assert event["event_type"] == "OrderPlaced"
    assert event["payload"]["items"] == [{"sku": "a", "quantity": 2}, {"sku": "b", "quantity": 1}]
    validate_payload("OrderPlaced", 1, event["payload"])
    assert event["trace"]["traceparent"].startswith("00-")
    # Tracing is off here (no exporter): still, the saga's events carry the order's trace.
    assert trace_id_of(event["trace"]) == trace_id_of(order.trace_context) != ""


@pytest.mark.django_db(transaction=True)
def test_emit_outside_a_transaction_is_refused() -> None:
    with pytest.raises(OutsideTransactionError):
        emit(event_type="OrderCompleted", saga_id=str(uuid.uuid4()), payload={})


@pytest.mark.django_db
def test_idempotency_key_replays_and_conflicts() -> None:
    first = place(idempotency_key="k1", fingerprint="f1")
    again, created = services.order_place(
        customer_id="alice",
        items=[{"sku": "a", "quantity": 1}],
        shipping_address={"country": "FR"},
        idempotency_key="k1",
        fingerprint="f1",
    )
    assert (again.id, created) == (first.id, False)
    with pytest.raises(services.IdempotencyConflict, match="different request body"):
        services.order_place(
            customer_id="bob",
            items=[{"sku": "a", "quantity": 1}],
            shipping_address={"country": "FR"},
            idempotency_key="k1",
            fingerprint="f2",
        )
    assert Order.objects.count() == 1


EVENTS = {
    "InventoryReserved": reserved,
    "InventoryRejected": lambda o: envelope(
        "InventoryRejected", o, {"code": "out_of_stock", "reason": "none"}
    ),
    "PaymentCompleted": lambda o: envelope("PaymentCompleted", o, {"customer_id": "alice", "amount": "7.00"}),
    "PaymentDeclined": lambda o: envelope(
        "PaymentDeclined", o, {"customer_id": "alice", "code": "insufficient_funds", "reason": "poor"}
    ),
    "ShipmentScheduled": lambda o: envelope("ShipmentScheduled", o, {"shipment_id": "s", "country": "FR"}),
    "ShipmentFailed": lambda o: envelope("ShipmentFailed", o, {"code": "country_not_served", "reason": "AQ"}),
    "InventoryReleased": lambda o: envelope("InventoryReleased", o, {"lines": []}),
    "PaymentRefunded": lambda o: envelope("PaymentRefunded", o, {"customer_id": "alice", "amount": "7.00"}),
    "InventoryDeducted": lambda o: envelope("InventoryDeducted", o, {"lines": []}),
    "ShipmentCancelled": lambda o: envelope("ShipmentCancelled", o, {"shipment_id": None}),
    "MessageRetried": lambda o: envelope(
        "MessageRetried",
        o,
        {"service": "payment", "event_type": "InventoryReserved", "event_id": "e", "attempts": 2},
    ),
    "MessageParked": lambda o: envelope(
        "MessageParked",
        o,
        {
            "service": "payment",
            "event_type": "InventoryReserved",
            "event_id": "e",
            "attempts": 3,
            "reason": "retries exhausted",
            "parked_id": 1,
        },
    ),
}


@pytest.mark.django_db
@pytest.mark.parametrize("event_type", sorted(EVENTS))
def test_duplicate_of_every_event_type_has_no_second_effect(event_type: str) -> None:
    order = place()
    event = EVENTS[event_type](str(order.id))
    assert deliver(event).disposition is Disposition.HANDLED
    after_first = (Order.objects.get(id=order.id).status, outbox_types(str(order.id)), order.timeline.count())
    assert deliver(event).disposition is Disposition.DUPLICATE
    assert (
        Order.objects.get(id=order.id).status,
        outbox_types(str(order.id)),
        order.timeline.count(),
    ) == after_first


def test_every_event_type_the_order_service_consumes_is_covered() -> None:
    from order_svc.orders.handlers import registry

    assert set(registry.event_types) == set(EVENTS)


@pytest.mark.django_db
def test_happy_path_reactions() -> None:
    order = place()
    oid = str(order.id)
    deliver(reserved(oid))
    order.refresh_from_db()
    assert order.total == Decimal("7.00")
    assert {line.sku: line.unit_price for line in order.lines.all()} == {
        "a": Decimal("3.00"),
        "b": Decimal("1.00"),
    }
    deliver(EVENTS["ShipmentScheduled"](oid))
    order.refresh_from_db()
    assert order.status == OrderStatus.COMPLETED
    assert outbox_types(oid) == ["OrderPlaced", "OrderCompleted"]
    assert [e.event_type for e in order.timeline.all()] == [
        "OrderPlaced",
        "InventoryReserved",
        "ShipmentScheduled",
        "OrderCompleted",
    ]


@pytest.mark.django_db
def test_shipment_failure_waits_for_refund_and_release() -> None:
    oid = str(place().id)
    deliver(EVENTS["ShipmentFailed"](oid))
    assert Order.objects.get(id=oid).status == OrderStatus.COMPENSATING
    deliver(EVENTS["PaymentRefunded"](oid))
    assert Order.objects.get(id=oid).status == OrderStatus.COMPENSATING
    deliver(EVENTS["InventoryReleased"](oid))
    order = Order.objects.get(id=oid)
    assert (order.status, order.failure_reason) == (OrderStatus.CANCELLED, "AQ")


@pytest.mark.django_db
def test_event_for_an_unknown_order_is_retried_not_applied() -> None:
    outcome = deliver(reserved(str(uuid.uuid4())))
    assert outcome.disposition is Disposition.RETRY
    assert "unknown order" in outcome.reason


# -- cancellation and deadlines ------------------------------------------------------
def confirmations(oid: str) -> list:
    return [
        EVENTS["InventoryReleased"](oid),
        envelope("PaymentRefunded", oid, {"amount": "0.00"}),
        envelope("ShipmentCancelled", oid, {"shipment_id": None}),
    ]


@pytest.mark.django_db
def test_cancel_waits_for_every_service_to_confirm_in_any_order() -> None:
    oid = str(place().id)
    services.order_cancel(order_id=oid, reason="changed my mind")
    assert outbox_types(oid) == ["OrderPlaced", "OrderCancelled"]
    validate_payload("OrderCancelled", 1, outbox_events(oid)[1]["payload"])
    third, first, second = confirmations(oid)
    for event in (first, second):
        deliver(event)
        assert Order.objects.get(id=oid).status == OrderStatus.COMPENSATING
    deliver(third)
    order = Order.objects.get(id=oid)
    assert (order.status, order.failure_reason) == (OrderStatus.CANCELLED, "changed my mind")


@pytest.mark.django_db
@pytest.mark.parametrize(
    "late", ["ShipmentScheduled", "PaymentDeclined", "ShipmentFailed", "InventoryRejected"]
)
def test_an_outcome_arriving_after_cancel_is_recorded_never_applied(late: str) -> None:
    oid = str(place().id)
    services.order_cancel(order_id=oid, reason="client")
    assert deliver(EVENTS[late](oid)).disposition is Disposition.HANDLED
    order = Order.objects.get(id=oid)
    assert (order.status, order.failure_reason) == (OrderStatus.COMPENSATING, "client")
    assert outbox_types(oid) == ["OrderPlaced", "OrderCancelled"]  # no OrderCompleted
    assert late in [e.event_type for e in order.timeline.all()]


@pytest.mark.django_db
@pytest.mark.parametrize("status", [OrderStatus.COMPLETED, OrderStatus.COMPENSATING, OrderStatus.REJECTED])
def test_only_a_pending_order_can_be_cancelled(status) -> None:
    order = place()
    Order.objects.filter(id=order.id).update(status=status)
    with pytest.raises(services.OrderNotCancellable, match=f"is {status}"):
        services.order_cancel(order_id=str(order.id), reason="x")
    assert outbox_types(str(order.id)) == ["OrderPlaced"]


@pytest.mark.django_db
def test_the_sweep_cancels_only_pending_orders_past_their_deadline() -> None:
    overdue, fresh, done = place(), place(), place()
    past = timezone.now() - timedelta(seconds=1)
    Order.objects.filter(id__in=[overdue.id, done.id]).update(deadline_at=past)
    Order.objects.filter(id=done.id).update(status=OrderStatus.COMPLETED)
    assert services.order_cancel_overdue() == 1
    assert Order.objects.get(id=overdue.id).status == OrderStatus.COMPENSATING
    assert "deadline passed" in Order.objects.get(id=overdue.id).failure_reason
    assert Order.objects.get(id=fresh.id).status == OrderStatus.PENDING
    assert Order.objects.get(id=done.id).status == OrderStatus.COMPLETED
    assert services.order_cancel_overdue() == 0


@pytest.mark.django_db
def test_a_step_handled_after_retries_is_announced_on_the_timeline() -> None:
    from common.messaging.consumer import process_delivery
    from order_svc.orders.handlers import registry

    oid = str(place().id)
    event = reserved(oid)
    body = event.to_json().encode()
    outcome = process_delivery(
        body,
        events=registry,
        service="order",
        signature=signed_as(body),
        attempt=2,
        last_error="OperationalError: connection lost",
    )
    assert outcome.disposition is Disposition.HANDLED
    notice = outbox_events(oid)[-1]
    assert notice["event_type"] == "MessageRetried"
    assert notice["causation_id"] == event.event_id
    assert notice["payload"] == {
        "service": "order",
        "event_type": "InventoryReserved",
        "event_id": event.event_id,
        "attempts": 2,
        "last_error": "OperationalError: connection lost",
    }


@pytest.mark.django_db
def test_a_parked_step_is_announced_once_on_the_timeline() -> None:
    from common.messaging.parking import parked_ingest

    oid = str(place().id)
    event = reserved(oid)
    headers = {
        "x-saga-park-reason": "retries exhausted after 4 attempts",
        "x-saga-attempt": 3,
        "x-saga-park-id": uuid.uuid4().hex,
    }
    parked = parked_ingest(body=event.to_json().encode(), headers=headers)
    parked_ingest(body=event.to_json().encode(), headers=headers)
    notices = [e for e in outbox_events(oid) if e["event_type"] == "MessageParked"]
    assert len(notices) == 1
    assert notices[0]["payload"]["parked_id"] == parked.id
    assert notices[0]["payload"]["reason"] == "retries exhausted after 4 attempts"
    parked_ingest(body=b"not json", headers={"x-saga-park-reason": "malformed"})  # no saga: no notice
    assert len(OutboxMessage.objects.filter(event_type="MessageParked")) == 1


@pytest.mark.django_db
def test_a_notice_about_an_unknown_order_is_dropped_not_retried() -> None:
    """A parked garbage message's made-up saga id must not park its MessageParked notice too."""
    unknown = str(uuid.uuid4())
    notice = envelope(
        "MessageParked",
        unknown,
        {
            "service": "inventory",
            "event_type": "OrderPlaced",
            "event_id": str(uuid.uuid4()),
            "attempts": 0,
            "reason": "malformed event: …",
            "last_error": "",
            "parked_id": 7,
        },
        producer="inventory",
    )
    assert deliver(notice).disposition is Disposition.HANDLED
    assert not SagaEvent.objects.filter(order_id=unknown).exists()
    # Any other event naming an unknown order still goes to the retry tiers (an operator looks).
    assert deliver(reserved(unknown)).disposition is Disposition.RETRY


@pytest.mark.django_db
@pytest.mark.parametrize("version", [1, 2])
def test_the_timeline_accepts_the_current_and_the_previous_payment_completed(version: int) -> None:
    order_id = str(place().id)
    payload = {"customer_id": "alice", "amount": "2.50"}
    if version == 2:
        payload["payment_id"] = str(uuid.uuid4())
    event = envelope("PaymentCompleted", order_id, payload, schema_version=version)
    assert deliver(event).disposition is Disposition.HANDLED
    assert SagaEvent.objects.filter(order_id=order_id, event_type="PaymentCompleted").count() == 1


@pytest.mark.django_db
def test_the_stuck_sagas_gauge_counts_what_the_admin_lists_as_stuck(settings) -> None:
    from common.observability.metrics import read_database_state
    from order_svc.orders import selectors

    settings.SAGA_STUCK_GRACE_SECONDS = 60
    late, recent, done = place(), place(), place()
    Order.objects.filter(id=late.id).update(deadline_at=timezone.now() - timedelta(seconds=120))
    Order.objects.filter(id=recent.id).update(deadline_at=timezone.now() - timedelta(seconds=30))
    Order.objects.filter(id=done.id).update(
        deadline_at=timezone.now() - timedelta(seconds=120), status=OrderStatus.COMPLETED
    )
    assert read_database_state("order").stuck == {"PENDING": 1, "COMPENSATING": 0}
    assert [o.id for o in selectors.order_stuck(grace_seconds=60)] == [late.id]
    assert {o.id for o in selectors.order_stuck()} == {late.id, recent.id}


@pytest.mark.django_db
def test_the_fast_representation_of_an_order_is_the_serializers() -> None:
    from order_svc.orders.api import OrderOutSerializer, order_out
    from order_svc.orders.selectors import order_get

    placed = place()  # as the POST answers: the instance order_place returned, total unknown
    assert order_out(placed) == OrderOutSerializer(placed).data
    assert order_out(placed)["total"] is None
    oid = str(placed.id)
    deliver(reserved(oid))
    deliver(EVENTS["ShipmentScheduled"](oid))
    full, _ = services.order_place(
        customer_id="bob",
        items=[{"sku": "a", "quantity": 1}],
        shipping_address={
            "country": "DE",
            "name": "Bob",
            "line1": "1 Main St",
            "city": "B",
            "postal_code": "1",
        },
    )
    services.order_cancel(order_id=str(full.id), reason="changed my mind")
    for order in (order_get(order_id=oid), order_get(order_id=str(full.id))):
        expected = OrderOutSerializer(order).data
        assert order_out(order) == expected
        assert json.dumps(order_out(order)) == json.dumps(expected)  # same types, same key order
    completed = order_out(order_get(order_id=oid))
    assert (completed["status"], completed["total"]) == ("COMPLETED", "7.00")
    assert {i["sku"]: i["unit_price"] for i in completed["items"]} == {"a": "3.00", "b": "1.00"}
    assert len(completed["timeline"]) == 4
    assert completed["created_at"].endswith("Z")


@pytest.mark.django_db(transaction=True)
def test_every_endpoint_answers_503_while_the_database_is_away() -> None:
    assert_every_endpoint_listed("order")
    assert_unavailable(ENDPOINTS["order"])
