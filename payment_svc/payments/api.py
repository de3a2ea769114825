from __future__ import annotations

from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, serializers, viewsets
from rest_framework.request import Request
from rest_framework.response import Response

from common.web.api import MoneyField, StrictCharField, text_query_param, uuid_query_param
from common.web.views import TEXT_PARAMETER, ApiSchema, KeyedResourceViewSet
from payment_svc.payments import selectors, services
from payment_svc.payments.models import Account, Payment


class AccountSerializer(serializers.ModelSerializer):
    customer_id = StrictCharField(min_length=1, max_length=64)
    balance = MoneyField(max_digits=14)

    class Meta:
        model = Account
        fields = ["customer_id", "balance"]


class PaymentSerializer(serializers.ModelSerializer):
    class Meta:
        model = Payment
        fields = ["id", "order_id", "customer_id", "kind", "amount", "created_at"]


class AccountViewSet(KeyedResourceViewSet):
    serializer_class = AccountSerializer
    lookup_field = "customer_id"
    noun = "Account"

    def get_queryset(self):
        return selectors.account_list()

    def fetch(self, key: str) -> Account | None:
        return selectors.account_get(customer_id=key)

    def create_with(self, data: dict[str, Any]) -> Account:
        return services.account_create(**data)


class PaymentViewSet(mixins.ListModelMixin, viewsets.GenericViewSet):
    serializer_class = PaymentSerializer
    schema = ApiSchema()

    def get_queryset(self):
        order_id = uuid_query_param(self.request, "order_id")
        return selectors.payment_list(
            order_id=order_id, customer_id=text_query_param(self.request, "customer_id")
        )

    @extend_schema(
        parameters=[
            OpenApiParameter("order_id", OpenApiTypes.UUID),
            OpenApiParameter("customer_id", TEXT_PARAMETER),
        ]
    )
    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().list(request, *args, **kwargs)
