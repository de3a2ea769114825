from __future__ import annotations

import hashlib
import json
import re
import uuid
from typing import Any

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from common.web.api import Conflict, JSONParser, StrictCharField, StrictIntegerField, text_query_param
from common.web.views import TEXT_PARAMETER, ApiSchema
from order_svc.orders import selectors, services
from order_svc.orders.models import Order, OrderStatus

MAX_LINES = 100
MAX_QUANTITY = 10_000
MAX_ID = 64  # customer_id, sku
MAX_ADDRESS_TEXT = 200
# \Z: "FR\n" is not a code ($ would take it), nor is " FR" (not trimmed)
COUNTRY_CODE = re.compile(r"\A[A-Z]{2}\Z")


class AddressSerializer(serializers.Serializer):
    country = serializers.RegexField(
        COUNTRY_CODE,
        trim_whitespace=False,
        error_messages={"invalid": "Must be an ISO-3166 alpha-2 code in upper case."},
    )
    name = StrictCharField(max_length=MAX_ADDRESS_TEXT, required=False, allow_blank=True)
    line1 = StrictCharField(max_length=MAX_ADDRESS_TEXT, required=False, allow_blank=True)
    city = StrictCharField(max_length=MAX_ADDRESS_TEXT, required=False, allow_blank=True)
    postal_code = StrictCharField(max_length=MAX_ADDRESS_TEXT, required=False, allow_blank=True)


class ItemInSerializer(serializers.Serializer):
    sku = StrictCharField(min_length=1, max_length=MAX_ID)
    quantity = StrictIntegerField(min_value=1, max_value=MAX_QUANTITY)


class OrderInSerializer(serializers.Serializer):
    customer_id = StrictCharField(min_length=1, max_length=MAX_ID)
    items = ItemInSerializer(
        many=True, allow_empty=False, max_length=MAX_LINES, help_text="Each sku may appear once (else a 400)."
    )
    shipping_address = AddressSerializer()

    def validate_items(self, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        seen: set[str] = set()
        repeated = sorted({item["sku"] for item in items if item["sku"] in seen or seen.add(item["sku"])})
        if repeated:
            raise ValidationError(f"Each sku may appear once; repeated: {', '.join(repeated)}.")
        return items


_ADDRESS_FIELDS = tuple(AddressSerializer().fields)  # in the serializer's order
_ADDRESS_TEXT = tuple(name for name in _ADDRESS_FIELDS if name != "country")


def _plain_text(value: Any, low: int, high: int) -> bool:
    """A str of low..high printable characters: no NUL, no surrogate, no control character."""
    return type(value) is str and low <= len(value) <= high and value.isprintable()


def order_in(data: Any) -> dict[str, Any] | None:
    """``OrderInSerializer(data=data).validated_data`` for a plainly valid order, without DRF.

    DRF builds and deep-copies every field of the serializer and of each line's per request:
    a sixth of the web process's CPU per order placed (py-spy). This takes the common case
    only: exactly the documented keys, plain printable strings within their limits, whole
    numbers as JSON integers, no repeated sku. Anything else (an error, or something DRF
    would accept after a conversion: ``5.0``, a tab in a name, an unknown key it ignores)
    returns None and goes through the serializer, which then has the last word and writes
    the error. tests/order/test_order_in.py checks that whatever this accepts, the
    serializer accepts with the same data (key order included).
    """
    if type(data) is not dict or data.keys() != {"customer_id", "items", "shipping_address"}:
        return None
    customer_id, items, address = data["customer_id"], data["items"], data["shipping_address"]
    if not _plain_text(customer_id, 1, MAX_ID) or type(items) is not list or not 1 <= len(items) <= MAX_LINES:
        return None
    lines, skus = [], set()
    for item in items:
        if type(item) is not dict or item.keys() != {"sku", "quantity"}:
            return None
        sku, quantity = item["sku"], item["quantity"]
        if not _plain_text(sku, 1, MAX_ID) or sku in skus:
            return None
        if type(quantity) is not int or not 1 <= quantity <= MAX_QUANTITY:
            return None
        skus.add(sku)
        lines.append({"sku": sku, "quantity": quantity})
    if type(address) is not dict or not address.keys() <= {"country", *_ADDRESS_TEXT}:
        return None
    country = address.get("country")
    if type(country) is not str or not COUNTRY_CODE.match(country):
        return None
    shipping_address = {"country": country}
    for name in _ADDRESS_TEXT:  # the serializer's field order
        if name in address:
            if not _plain_text(address[name], 0, MAX_ADDRESS_TEXT):
                return None
            shipping_address[name] = address[name]
    return {"customer_id": customer_id, "items": lines, "shipping_address": shipping_address}


class LineOutSerializer(serializers.Serializer):
    sku = serializers.CharField()
    quantity = serializers.IntegerField()
    unit_price = serializers.DecimalField(max_digits=12, decimal_places=2, allow_null=True)


class TimelineOutSerializer(serializers.Serializer):
    event_type = serializers.CharField()
    service = serializers.CharField()
    at = serializers.DateTimeField(source="occurred_at")
    event_id = serializers.UUIDField()


class OrderOutSerializer(serializers.ModelSerializer):
    total = serializers.DecimalField(max_digits=14, decimal_places=2, allow_null=True)
    items = LineOutSerializer(source="lines", many=True)
    timeline = TimelineOutSerializer(many=True)
    shipping_address = AddressSerializer()

    class Meta:
        model = Order
        fields = [
            "id",
            "customer_id",
            "status",
            "failure_reason",
            "total",
            "items",
            "shipping_address",
            "created_at",
            "updated_at",
            "timeline",
        ]


# One instance of each output field, shared: DRF builds (and deep-copies) every field of a
# serializer per call, half of the web process's CPU per order placed (py-spy). These keep
# DRF's own formatting of money and times; tests/order/test_order.py checks that
# order_out() and OrderOutSerializer agree.
_TOTAL = serializers.DecimalField(max_digits=14, decimal_places=2, allow_null=True)
_PRICE = serializers.DecimalField(max_digits=12, decimal_places=2, allow_null=True)
_TIME = serializers.DateTimeField()


def _or_none(field: serializers.Field, value: Any) -> Any:
    return None if value is None else field.to_representation(value)


def order_out(order: Order) -> dict[str, Any]:
    """``OrderOutSerializer(order).data`` (its schema is the API's), built directly.

    An order from services.order_place or selectors.order_get carries its lines and steps
    (``line_views``, ``step_views``); any other reads them through its relations.
    """
    address = order.shipping_address
    lines = getattr(order, "line_views", None)
    timeline = getattr(order, "step_views", None)
    return {
        "id": str(order.id),
        "customer_id": str(order.customer_id),
        "status": str(order.status),
        "failure_reason": str(order.failure_reason),
        "total": _or_none(_TOTAL, order.total),
        "items": [
            {
                "sku": str(line.sku),
                "quantity": int(line.quantity),
                "unit_price": _or_none(_PRICE, line.unit_price),
            }
            for line in (order.lines.all() if lines is None else lines)
        ],
        "shipping_address": {
            name: None if address[name] is None else str(address[name])
            for name in _ADDRESS_FIELDS
            if name in address
        },
        "created_at": _or_none(_TIME, order.created_at),
        "updated_at": _or_none(_TIME, order.updated_at),
        "timeline": [
            {
                "event_type": str(event.event_type),
                "service": str(event.service),
                "at": _or_none(_TIME, event.occurred_at),
                "event_id": str(event.event_id),
            }
            for event in (order.timeline.all() if timeline is None else timeline)
        ],
    }


class CancelInSerializer(serializers.Serializer):
    reason = StrictCharField(required=False, min_length=1, max_length=200)


def fingerprint(data: dict[str, Any]) -> str:
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


class OrderViewSet(mixins.ListModelMixin, viewsets.GenericViewSet):
    serializer_class = OrderOutSerializer
    schema = ApiSchema()
    parser_classes = [JSONParser]
    # An Idempotency-Key reused with another body; an order past PENDING.
    extra_error_responses = {"create": (409,), "cancel": (409,)}

    def get_queryset(self):
        status_filter = self.request.query_params.get("status")
        if status_filter is not None and status_filter not in OrderStatus.values:
            raise ValidationError({"status": [f"Must be one of {', '.join(OrderStatus.values)}."]})
        return selectors.order_list(
            status=status_filter, customer_id=text_query_param(self.request, "customer_id")
        )

    @extend_schema(
        parameters=[
            OpenApiParameter("status", str, enum=OrderStatus.values),
            OpenApiParameter("customer_id", TEXT_PARAMETER),
        ]
    )
    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        queryset = self.filter_queryset(self.get_queryset())
        page = self.paginate_queryset(queryset)
        if page is not None:
            return self.get_paginated_response([order_out(order) for order in page])
        return Response([order_out(order) for order in queryset])

    @extend_schema(responses=OrderOutSerializer)
    def retrieve(self, request: Request, pk: str | None = None) -> Response:
        order = selectors.order_get(order_id=_uuid_or_404(pk))
        if order is None:
            raise NotFound(f"Order {pk} does not exist.")
        return Response(order_out(order))

    @extend_schema(
        request=OrderInSerializer,
        responses={201: OrderOutSerializer, 200: OrderOutSerializer},
        parameters=[
            OpenApiParameter(
                "Idempotency-Key",
                {"type": "string", "minLength": 1, "maxLength": 255},
                OpenApiParameter.HEADER,
                description="Replaying a request with the same key and body returns the same order (200).",
            )
        ],
    )
    def create(self, request: Request) -> Response:
        key = request.headers.get("Idempotency-Key")
        if key is not None and not 1 <= len(key) <= 255:
            raise ValidationError({"Idempotency-Key": ["Must be 1 to 255 characters."]})
        data = order_in(request.data)
        if data is None:  # an error, or an unusual body: DRF decides, and words the 400
            incoming = OrderInSerializer(data=request.data)
            incoming.is_valid(raise_exception=True)
            data = incoming.validated_data
        try:
            order, created = services.order_place(
                customer_id=data["customer_id"],
                items=[dict(item) for item in data["items"]],
                shipping_address=dict(data["shipping_address"]),
                idempotency_key=key,
                fingerprint=fingerprint(data) if key else "",
            )
        except services.IdempotencyConflict as exc:
            raise Conflict(str(exc)) from exc
        if not created:  # a replay: the order as it is now
            order = selectors.order_get(order_id=str(order.id))
        return Response(order_out(order), status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)

    @extend_schema(request=CancelInSerializer, responses={202: OrderOutSerializer})
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: str | None = None) -> Response:
        """Cancel a PENDING order: 202, then COMPENSATING until every service undid its part."""
        order_id = _uuid_or_404(pk)
        incoming = CancelInSerializer(data=request.data if isinstance(request.data, dict) else {})
        incoming.is_valid(raise_exception=True)
        reason = incoming.validated_data.get("reason") or "cancelled by the client"
        try:
            services.order_cancel(order_id=order_id, reason=reason)
        except services.OrderNotFound as exc:
            raise NotFound(f"Order {pk} does not exist.") from exc
        except services.OrderNotCancellable as exc:
            raise Conflict(str(exc)) from exc
        return Response(order_out(selectors.order_get(order_id=order_id)), status=status.HTTP_202_ACCEPTED)


def _uuid_or_404(value: str | None) -> str:
    try:
        return str(uuid.UUID(str(value)))
    except ValueError as exc:
        raise NotFound(f"Order {value} does not exist.") from exc
