from __future__ import annotations

from django.db.models import QuerySet

from order_svc.orders.models import Order


def order_list(*, status: str | None = None, customer_id: str | None = None) -> QuerySet[Order]:
    orders = Order.objects.prefetch_related("lines", "timeline").order_by("-created_at", "id")
    if status:
        orders = orders.filter(status=status)
    if customer_id:
        orders = orders.filter(customer_id=customer_id)
    return orders


def order_get(*, order_id: str) -> Order | None:
    return Order.objects.prefetch_related("lines", "timeline").filter(id=order_id).first()
