"""Shipping use cases."""

from __future__ import annotations

from typing import Any

from django.conf import settings

from common.outbox import emit
from shipping_svc.shipping.models import Destination, Shipment


class DestinationUnknown(Exception):
    """PaymentCompleted arrived before OrderPlaced was handled here; retried later."""


def country_served(country: str) -> bool:
    served = settings.SHIPPING_SERVED_COUNTRIES
    return country not in settings.SHIPPING_UNSERVED_COUNTRIES and ("*" in served or country in served)


def destination_record(*, order_id: str, address: dict[str, Any]) -> None:
    Destination.objects.get_or_create(
        order_id=order_id, defaults={"country": address["country"], "address": address}
    )


def shipment_schedule(*, order_id: str) -> None:
    """Schedule the paid order's shipment: ShipmentScheduled, or ShipmentFailed (no shipment)."""
    if Shipment.objects.filter(order_id=order_id).exists():
        return
    destination = Destination.objects.filter(order_id=order_id).first()
    if destination is None:
        raise DestinationUnknown(f"no destination recorded yet for order {order_id}")
    country = destination.country
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
    shipment = Shipment.objects.create(order_id=order_id, country=country)
    emit(
        event_type="ShipmentScheduled",
        saga_id=order_id,
        payload={"shipment_id": str(shipment.id), "country": country},
    )
