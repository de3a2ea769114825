from __future__ import annotations

from django.db.models import QuerySet

from shipping_svc.shipping.models import Shipment


def shipment_list(*, order_id: str | None = None) -> QuerySet[Shipment]:
    shipments = Shipment.objects.order_by("created_at", "id")
    return shipments.filter(order_id=order_id) if order_id else shipments
