from __future__ import annotations

from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, serializers, viewsets
from rest_framework.request import Request
from rest_framework.response import Response

from common.web.api import uuid_query_param
from common.web.views import ApiSchema
from shipping_svc.shipping import selectors
from shipping_svc.shipping.models import Shipment


class ShipmentSerializer(serializers.ModelSerializer):
    class Meta:
        model = Shipment
        fields = ["id", "order_id", "status", "country", "created_at"]


class ShipmentViewSet(mixins.ListModelMixin, viewsets.GenericViewSet):
    serializer_class = ShipmentSerializer
    schema = ApiSchema()

    def get_queryset(self):
        order_id = uuid_query_param(self.request, "order_id")
        return selectors.shipment_list(order_id=order_id)

    @extend_schema(parameters=[OpenApiParameter("order_id", OpenApiTypes.UUID)])
    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().list(request, *args, **kwargs)
