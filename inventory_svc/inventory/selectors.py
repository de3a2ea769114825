from __future__ import annotations

from django.db.models import QuerySet

from inventory_svc.inventory.models import Product, Reservation


def product_get(*, sku: str) -> Product | None:
    return Product.objects.filter(sku=sku).first()


def product_list() -> QuerySet[Product]:
    return Product.objects.order_by("sku")


def reservation_list(*, order_id: str | None = None) -> QuerySet[Reservation]:
    reservations = Reservation.objects.order_by("created_at", "product_id")
    return reservations.filter(order_id=order_id) if order_id else reservations
