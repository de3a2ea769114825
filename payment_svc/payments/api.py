from __future__ import annotations

from rest_framework import serializers

from common.web.api import MoneyField, StrictCharField
from common.web.views import KeyedResource, KeyedResourceViewSet, RecordsOfOrdersViewSet
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
    resource = KeyedResource(
        "Account", "customer_id", selectors.account_list, selectors.account_get, services.account_create
    )


class PaymentViewSet(RecordsOfOrdersViewSet):
    serializer_class = PaymentSerializer
    text_filters = ("customer_id",)
    select = staticmethod(selectors.payment_list)
