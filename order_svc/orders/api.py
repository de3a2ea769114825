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
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response

from common.web.api import (
    Conflict,
    JSONParser,
    StrictCharField,
    StrictIntegerField,
    bearer_token_ok,
    text_query_param,
)
from common.web.fastpath import plain_input, representer
from common.web.views import TEXT_PARAMETER, ApiSchema
from common.web.wsgi import Answer, LeanRequest
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


# The POST's body, checked without DRF's per-call cost when it is plainly valid (see
# common/web/fastpath.py); anything else goes through OrderInSerializer.
order_in = plain_input(OrderInSerializer)


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


# OrderOutSerializer(order).data, built from the serializer's own fields once. An order
# from services.order_place or selectors.order_get carries its lines and steps already read
# (``line_views``, ``step_views``); any other reads them through its relations.
def _read(rows: str, relation: str) -> Any:
    def get(order: Order) -> Any:
        found = getattr(order, rows, None)
        return getattr(order, relation) if found is None else found  # rows, or the relation

    return get


order_out = representer(
    OrderOutSerializer,
    sources={"items": _read("line_views", "lines"), "timeline": _read("step_views", "timeline")},
)


class CancelInSerializer(serializers.Serializer):
    reason = StrictCharField(required=False, min_length=1, max_length=200)


cancel_in = plain_input(CancelInSerializer)
DEFAULT_CANCEL_REASON = "cancelled by the client"


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
            code, body = _place(data, key)
        except services.IdempotencyConflict as exc:
            raise Conflict(str(exc)) from exc
        return Response(body, status=code)

    @extend_schema(request=CancelInSerializer, responses={202: OrderOutSerializer})
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: str | None = None) -> Response:
        """Cancel a PENDING order: 202, then COMPENSATING until every service undid its part."""
        order_id = _uuid_or_404(pk)
        incoming = CancelInSerializer(data=request.data if isinstance(request.data, dict) else {})
        incoming.is_valid(raise_exception=True)
        try:
            code, body = _cancel(order_id, incoming.validated_data.get("reason"))
        except services.OrderNotFound as exc:
            raise NotFound(f"Order {pk} does not exist.") from exc
        except services.OrderNotCancellable as exc:
            raise Conflict(str(exc)) from exc
        return Response(body, status=code)


def _place(data: dict[str, Any], key: str | None) -> tuple[int, dict[str, Any]]:
    """Place a checked order: (201, the order) or, replaying an Idempotency-Key, (200, the
    order as it is now). IdempotencyConflict if the key came with another body."""
    order, created = services.order_place(
        customer_id=data["customer_id"],
        items=[dict(item) for item in data["items"]],
        shipping_address=dict(data["shipping_address"]),
        idempotency_key=key,
        fingerprint=fingerprint(data) if key else "",
    )
    if not created:  # a replay: the order as it is now
        return status.HTTP_200_OK, order_out(selectors.order_get(order_id=str(order.id)))
    return status.HTTP_201_CREATED, order_out(order)


def _cancel(order_id: str, reason: str | None) -> tuple[int, dict[str, Any]]:
    """Cancel a PENDING order: (202, the order as it is now). OrderNotFound, or
    OrderNotCancellable past PENDING."""
    services.order_cancel(order_id=order_id, reason=reason or DEFAULT_CANCEL_REASON)
    return status.HTTP_202_ACCEPTED, order_out(selectors.order_get(order_id=order_id))


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")  # NaN, Infinity: DRF's strict parser refuses them


_render = JSONRenderer().render


def place_lean(request: LeanRequest) -> Answer:
    """``POST /api/orders/`` in front of Django (common/web/wsgi.py), for the common case
    only: the API token, an Idempotency-Key of a valid length or none, and a body that
    ``order_in`` finds plainly valid. Anything else, and a key reused with another body,
    returns None: the request goes on to ``OrderViewSet.create``, which words the error."""
    key = request.header("Idempotency-Key")
    if not bearer_token_ok(request.header("Authorization")) or (key is not None and not 1 <= len(key) <= 255):
        return None
    try:
        data = order_in(json.loads(request.body.decode(), parse_constant=_no_constants))
    except (ValueError, RecursionError):  # not UTF-8, not JSON, nested too deeply
        return None
    if data is None:
        return None
    try:
        code, body = _place(data, key)
    except services.IdempotencyConflict:
        return None
    return code, _render(body)


def cancel_lean(request: LeanRequest) -> Answer:
    """``POST /api/orders/{id}/cancel/`` in front of Django, for the common case only: the API
    token, an order id, and no body or a plainly valid one. The answer is the view's: 202
    with the order, or 409 when it is past PENDING, worded as the API's error handler words
    a Conflict. Anything else — an unknown order included — returns None: ``OrderViewSet.cancel``
    answers it."""
    if not bearer_token_ok(request.header("Authorization")):
        return None
    try:
        order_id = str(uuid.UUID(request.argument))
    except ValueError:
        return None
    data: dict[str, Any] | None = {}
    if request.body:
        try:
            data = cancel_in(json.loads(request.body.decode(), parse_constant=_no_constants))
        except (ValueError, RecursionError):
            return None
    if data is None:
        return None
    try:
        code, body = _cancel(order_id, data.get("reason"))
    except services.OrderNotFound:
        return None
    except services.OrderNotCancellable as exc:
        return status.HTTP_409_CONFLICT, _render({"error": Conflict.default_code, "message": str(exc)})
    return code, _render(body)


def _uuid_or_404(value: str | None) -> str:
    try:
        return str(uuid.UUID(str(value)))
    except ValueError as exc:
        raise NotFound(f"Order {value} does not exist.") from exc
