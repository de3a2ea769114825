from __future__ import annotations

from typing import Any

from rest_framework import serializers

from common.web.api import MoneyField, StrictCharField
from common.web.views import KeyedResourceViewSet, RecordsOfOrdersViewSet
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


class PaymentViewSet(RecordsOfOrdersViewSet):
    serializer_class = PaymentSerializer
    text_filters = ("customer_id",)

    def select(self, **filters: str | None) -> Any:
        return selectors.payment_list(**filters)
