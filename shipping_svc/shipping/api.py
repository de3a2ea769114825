from __future__ import annotations

from rest_framework import serializers

from common.web.views import RecordsOfOrdersViewSet
from shipping_svc.shipping import selectors
from shipping_svc.shipping.models import Shipment


class ShipmentSerializer(serializers.ModelSerializer):
    class Meta:
        model = Shipment
        fields = ["id", "order_id", "status", "country", "created_at"]


class ShipmentViewSet(RecordsOfOrdersViewSet):
    serializer_class = ShipmentSerializer
    select = staticmethod(selectors.shipment_list)
