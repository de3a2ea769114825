from __future__ import annotations

from rest_framework import serializers

from common.web.api import MoneyField, StrictCharField, StrictIntegerField
from common.web.views import KeyedResource, KeyedResourceViewSet, RecordsOfOrdersViewSet
from inventory_svc.inventory import selectors, services
from inventory_svc.inventory.models import Product, Reservation


class ProductSerializer(serializers.ModelSerializer):
    sku = StrictCharField(min_length=1, max_length=64)
    name = StrictCharField(min_length=1, max_length=200)
    price = MoneyField(max_digits=12)
    available = StrictIntegerField(min_value=0, max_value=1_000_000_000)

    class Meta:
        model = Product
        fields = ["sku", "name", "price", "available", "reserved", "version"]
        read_only_fields = ["reserved", "version"]


class ReservationSerializer(serializers.ModelSerializer):
    sku = serializers.CharField(source="product_id")

    class Meta:
        model = Reservation
        fields = ["id", "order_id", "sku", "quantity", "unit_price", "status", "created_at"]


class ProductViewSet(KeyedResourceViewSet):
    serializer_class = ProductSerializer
    resource = KeyedResource(
        "Product", "sku", selectors.product_list, selectors.product_get, services.product_create
    )


class ReservationViewSet(RecordsOfOrdersViewSet):
    serializer_class = ReservationSerializer
    select = staticmethod(selectors.reservation_list)
