"""Shipping use cases."""

from __future__ import annotations

import json
import logging
from typing import Any

from django.conf import settings

from common.messaging.ids import new_id
from common.messaging.outbox import emit
from common.messaging.sagas import saga_facts, saga_mark_cancelled, saga_step
from common.messaging.statements import statement_cursor
from shipping_svc.shipping import statements
from shipping_svc.shipping.models import Shipment, ShipmentStatus

log = logging.getLogger(__name__)


class DestinationUnknown(Exception):
    """A PaymentCompleted without the address (from before the upgrade) arrived before the
    saga's OrderPlaced was handled here; retried later."""


def country_served(country: str) -> bool:
    served = settings.SHIPPING_SERVED_COUNTRIES
    return country not in settings.SHIPPING_UNSERVED_COUNTRIES and ("*" in served or country in served)


@saga_step
def destination_record(*, order_id: str, address: dict[str, Any]) -> None:
    # Once per order (a duplicate changes nothing): one INSERT … ON CONFLICT DO NOTHING.
    with statement_cursor() as cursor:
        statements.destination_insert.execute(cursor, [order_id, address["country"], json.dumps(address)])


@saga_step
def shipment_schedule(*, order_id: str, shipping_address: dict[str, Any] | None = None) -> None:
    """Schedule the paid order's shipment: ShipmentScheduled, or ShipmentFailed (no shipment).

    The destination comes with PaymentCompleted; one from before the upgrade has none, and
    then the destination recorded from the saga's OrderPlaced is used.
    """
    if shipping_address is not None:
        scheduled, cancelled = saga_facts(statements.schedule_facts, [order_id, order_id])
        country = shipping_address["country"]
    else:
        scheduled, cancelled, country = saga_facts(
            statements.schedule_facts_recorded, [order_id, order_id, order_id]
        )
    if scheduled:
        return
    if cancelled:
        log.info(
            "order %s was cancelled before shipping: not scheduling", order_id, extra={"saga_id": order_id}
        )
        return
    if country is None:
        raise DestinationUnknown(f"no destination recorded yet for order {order_id}")
    if not country_served(country):
        emit(
            event_type="ShipmentFailed",
            saga_id=order_id,
            payload={
                "code": "country_not_served",
                "country": country,
                "reason": f"destination country {country} is not served",
            },
        )
        return
    shipment_id = new_id()
    with statement_cursor() as cursor:
        statements.shipment_insert.execute(
            cursor, [shipment_id, order_id, ShipmentStatus.SCHEDULED.value, country]
        )
    emit(
        event_type="ShipmentScheduled",
        saga_id=order_id,
        payload={"shipment_id": str(shipment_id), "country": country},
    )


@saga_step
def shipment_cancel(*, order_id: str, reason: str) -> None:
    """The order was cancelled: refuse a late shipment, cancel a scheduled one, confirm."""
    saga_mark_cancelled(saga_id=order_id, reason=reason)
    with statement_cursor() as cursor:  # plain SQL: this runs for every cancelled saga
        statements.shipment_read.execute(cursor, [order_id])
        shipment = cursor.fetchone()  # order_id is unique: one shipment at most
        if shipment is not None and shipment[1] != ShipmentStatus.CANCELLED:  # cancelled once only
            Shipment.require(order_id=order_id, current=shipment[1], to=ShipmentStatus.CANCELLED)
            statements.shipment_set_status.execute(cursor, [ShipmentStatus.CANCELLED.value, shipment[0]])
    emit(
        event_type="ShipmentCancelled",
        saga_id=order_id,
        payload={"shipment_id": str(shipment[0]) if shipment else None},
    )
