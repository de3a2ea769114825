"""Views shared by the services (kept apart from common.web.api, which DRF settings import).

Also what their OpenAPI schema says about the shared plumbing of common.web.api: the bearer
token, and the error responses every API operation may give (``ApiSchema``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension, OpenApiSerializerFieldExtension
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_serializer
from rest_framework import exceptions, mixins, serializers, status, viewsets
from rest_framework.response import Response
from rest_framework.views import APIView

from common.errors import AlreadyExists
from common.messaging import flow
from common.web.api import Conflict, JSONParser, text_query_param, uuid_query_param


@extend_schema_serializer(many=False)  # an error is one object, on list operations too
class ErrorSerializer(serializers.Serializer):
    """Every API error (common.web.api.exception_handler, json_error)."""

    error = serializers.CharField(help_text="A machine-readable code, e.g. validation_failed.")
    message = serializers.CharField(help_text="What went wrong, for a person.")
    fields = serializers.DictField(
        required=False, help_text="validation_failed only: the messages for each field, by field path."
    )


ERROR_DESCRIPTIONS = {
    400: "Invalid input (the body, a query parameter or a header); ``fields`` names what.",
    401: "No or a wrong ``Authorization: Bearer <token>`` header.",
    404: "No such resource, or no such page.",
    409: "The request conflicts with the current state.",
    411: "A chunked request body: send it with a Content-Length.",
    413: "The request body is over the size limit.",
    415: "A request body that is not application/json.",
}


def error_responses(*codes: int) -> dict[int, OpenApiResponse]:
    """``responses`` entries of ``extend_schema`` for the error statuses ``codes``."""
    return {code: OpenApiResponse(ErrorSerializer, description=ERROR_DESCRIPTIONS[code]) for code in codes}


class BearerTokenScheme(OpenApiAuthenticationExtension):
    """The schema's security scheme for common.web.api.BearerTokenAuthentication."""

    target_class = "common.web.api.BearerTokenAuthentication"
    name = "bearerAuth"

    def get_security_definition(self, auto_schema: AutoSchema) -> dict[str, str]:
        return {"type": "http", "scheme": "bearer", "description": "The shared API token."}


NO_NUL_PATTERN = "^[^\\u0000]*$"
# A free-text query parameter (common.web.api.text_query_param): any string without a NUL.
TEXT_PARAMETER = {"type": "string", "pattern": NO_NUL_PATTERN}


class MoneyFieldSchema(OpenApiSerializerFieldExtension):
    """common.web.api.MoneyField as it validates: a decimal string matching its ``pattern``."""

    target_class = "common.web.api.MoneyField"

    def map_serializer_field(self, auto_schema: AutoSchema, direction: Any) -> dict[str, Any]:
        return {"type": "string", "format": "decimal", "pattern": self.target.pattern, "example": "10.00"}


class ApiSchema(AutoSchema):
    """Documents the errors the shared plumbing gives on every operation of its kind.

    401 wherever a token is needed; 400, 411, 413 and 415 where a JSON body is read
    (common.web.api.BodySizeLimitMiddleware, DRF's parser); 400 and 404 on paginated lists
    (a bad ``page_size``, no such ``page``); 404 where the path names a resource. What
    only a view knows (a 409) it names in ``extra_error_responses`` (by action), or
    documents with ``extend_schema(responses=...)``, which wins.
    """

    def _map_serializer_field(self, field: Any, direction: Any, bypass_extensions: bool = False) -> Any:
        # drf-spectacular leaves out the limits of a nested ``many=True`` serializer.
        schema = super()._map_serializer_field(field, direction, bypass_extensions)
        if isinstance(field, serializers.ListSerializer) and schema and schema.get("type") == "array":
            min_length = field.min_length if field.min_length is not None else int(not field.allow_empty)
            if min_length:
                schema["minItems"] = min_length
            if field.max_length is not None:
                schema["maxItems"] = field.max_length
        return schema

    def _insert_field_validators(self, field: Any, schema: dict[str, Any]) -> None:
        super()._insert_field_validators(field, schema)
        # DRF's CharField refuses NUL characters (a 400): say so where no pattern says more.
        # Added after drf-spectacular's own patterns (a RegexField's) and blank handling.
        if (
            isinstance(field, serializers.CharField)
            and not field.read_only
            and schema.get("type") == "string"
            and "pattern" not in schema
        ):
            schema["pattern"] = NO_NUL_PATTERN

    def get_override_parameters(self) -> list[Any]:
        parameters = super().get_override_parameters()
        text_filters = getattr(self.view, "text_filters", None)
        if text_filters is not None and self.method == "GET" and self._is_list_view():
            # RecordsOfOrdersViewSet: its query parameters, from the same names it reads
            parameters = [
                OpenApiParameter("order_id", OpenApiTypes.UUID),
                *(OpenApiParameter(name, TEXT_PARAMETER) for name in text_filters),
                *parameters,
            ]
        return parameters

    def _get_response_bodies(self, direction: Any = "response") -> dict[str, Any]:
        responses = super()._get_response_bodies(direction)
        codes: set[int] = set()
        if any(self.get_auth()):  # [{}] where no token is needed
            codes.add(401)
        if self.method in ("POST", "PUT", "PATCH"):
            codes |= {400, 411, 413, 415}
        if self.method == "GET" and self._is_list_view() and self._get_paginator():
            codes |= {400, 404}
        if "{" in self.path:
            codes.add(404)
        codes.update(
            getattr(self.view, "extra_error_responses", {}).get(getattr(self.view, "action", None), ())
        )
        for code, response in error_responses(*sorted(codes)).items():
            if str(code) not in responses:
                responses[str(code)] = self._get_response_for_code(response, str(code), direction=direction)
        return responses


@dataclass(frozen=True)
class KeyedResource:
    """A resource read and created by its natural key, through the service's own layers."""

    noun: str  # "Product": in the 404's message
    key: str  # the lookup field: "sku"
    select_all: Callable[[], Any]  # selector: the list's queryset
    select_one: Callable[..., Any]  # selector: called with key=value, None when absent
    create: Callable[..., Any]  # service: called with the validated fields, may raise AlreadyExists


class KeyedResourceViewSet(mixins.ListModelMixin, viewsets.GenericViewSet):
    """List, read one by its natural key, create through a service (409 if the key is taken).

    A subclass names its ``serializer_class`` and its ``resource`` (a KeyedResource).
    """

    resource: KeyedResource
    lookup_value_regex = r"[^/\x00]{1,64}"  # no key has a NUL (PostgreSQL text cannot hold one)
    schema = ApiSchema()
    parser_classes = [JSONParser]
    extra_error_responses = {"create": (409,)}  # the key is taken

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.lookup_field = cls.resource.key  # what the router builds the detail URL from

    def get_queryset(self) -> Any:
        return self.resource.select_all()

    def fetch(self, key: str) -> Any:
        return self.resource.select_one(**{self.resource.key: key})

    def create_with(self, data: dict[str, Any]) -> Any:
        return self.resource.create(**data)

    def retrieve(self, request: Any, **kwargs: str) -> Response:
        key = kwargs[self.lookup_field]
        found = self.fetch(key)
        if found is None:
            raise exceptions.NotFound(f"{self.resource.noun} {key} does not exist.")
        return Response(self.get_serializer(found).data)

    def create(self, request: Any, *args: Any, **kwargs: Any) -> Response:
        incoming = self.get_serializer(data=request.data)
        incoming.is_valid(raise_exception=True)
        try:
            created = self.create_with(dict(incoming.validated_data))
        except AlreadyExists as exc:
            raise Conflict(str(exc)) from exc
        return Response(self.get_serializer(created).data, status=status.HTTP_201_CREATED)


# The list of what a service keeps per order (reservations, payments, shipments), filtered
# by ``?order_id=`` and by the text parameters a subclass names in ``text_filters``; the
# subclass names its selector in ``select`` (``staticmethod(selectors.x_list)``). (A comment,
# not a docstring: the OpenAPI schema would take a docstring as the description of every
# subclass's operation.)
class RecordsOfOrdersViewSet(mixins.ListModelMixin, viewsets.GenericViewSet):
    schema = ApiSchema()
    text_filters: tuple[str, ...] = ()
    select: Callable[..., Any]

    def get_queryset(self) -> Any:
        filters = {name: text_query_param(self.request, name) for name in self.text_filters}
        return self.select(order_id=uuid_query_param(self.request, "order_id"), **filters)


class FlowView(APIView):
    """This service's part of the saga map (common/messaging/flow.py), for a window."""

    schema = ApiSchema()

    @extend_schema(
        operation_id="flow_retrieve",
        parameters=[
            OpenApiParameter(
                "window",
                OpenApiTypes.STR,
                enum=list(flow.WINDOWS),
                description="The window of the figures (default 5m).",
            )
        ],
        responses={200: OpenApiTypes.OBJECT, **error_responses(400)},
        description=(
            "Per edge (producer, event type) in the window: deliveries handled, retries, median "
            "and p95 lag from publish to handling; parked messages; the outbox backlog; whether "
            "the relay beats and what the broker says of the service's queues (consumers, ready "
            "messages); and the service's handler registry (the choreography's source)."
        ),
    )
    def get(self, request: Any) -> Response:
        window = request.query_params.get("window", "5m")
        if window not in flow.WINDOWS:
            raise exceptions.ValidationError({"window": [f"one of {', '.join(flow.WINDOWS)}"]})
        return Response(flow.report(window))
