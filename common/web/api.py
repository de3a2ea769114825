"""REST plumbing shared by the services: auth, JSON errors, limits, pagination."""

from __future__ import annotations

import hmac
import logging
import re
import sys
import uuid
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.signals import got_request_exception
from django.db import InterfaceError, OperationalError
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from rest_framework import exceptions, parsers, serializers, status
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.pagination import PageNumberPagination
from rest_framework.response import Response

log = logging.getLogger("saga.api")


class ServiceUser:
    """The API client authenticated by the shared bearer token."""

    is_authenticated = True
    is_active = True
    is_anonymous = False
    username = "api-client"
    pk = None


class BearerTokenAuthentication(BaseAuthentication):
    keyword = b"bearer"

    def authenticate(self, request: Any) -> tuple[ServiceUser, str] | None:
        auth = get_authorization_header(request).split()
        if not auth:
            return None
        if auth[0].lower() != self.keyword or len(auth) != 2:
            raise exceptions.AuthenticationFailed("Authorization header must be 'Bearer <token>'.")
        token = auth[1].decode("latin-1")
        if not token_matches(token):
            raise exceptions.AuthenticationFailed("Invalid API token.")
        return ServiceUser(), token

    def authenticate_header(self, request: Any) -> str:
        return 'Bearer realm="api"'


def token_matches(token: str) -> bool:
    """Is ``token`` the API token (compared in constant time)?"""
    return hmac.compare_digest(token.encode(), settings.SAGA_API_TOKEN.encode())


def bearer_token_ok(header: str | None) -> bool:
    """Does an ``Authorization`` header carry the API token, as ``BearerTokenAuthentication``
    would accept it? (For the lean path, which leaves every refusal to DRF to word.)"""
    try:
        parts = (header or "").encode("latin-1").split()  # as DRF splits it: ASCII whitespace
    except UnicodeEncodeError:
        return False
    return len(parts) == 2 and parts[0].lower() == b"bearer" and token_matches(parts[1].decode("latin-1"))


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser, but a body nested deeper than the decoder's recursion limit (a few
    KiB of ``[[[[...``) is a 400 like any other bad JSON, not a RecursionError and a 500."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError as exc:
            raise exceptions.ParseError("JSON parse error - nested too deeply.") from exc


class StrictCharField(serializers.CharField):
    """A string field that refuses JSON numbers and booleans instead of coercing them.

    It takes the string as sent: no trimming of surrounding whitespace, so its length limits
    and blank check apply to what the client sent (as the schema's maxLength/minLength say),
    and a key is stored as given.
    """

    default_error_messages = {"invalid": "Must be a string."}

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("trim_whitespace", False)
        super().__init__(**kwargs)

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictIntegerField(serializers.IntegerField):
    """An integer field that refuses strings ("5") and booleans; 5.0 is still 5, 5.5 is refused."""

    default_error_messages = {"invalid": "Must be a whole number given as a JSON number."}

    def to_internal_value(self, data: Any) -> int:
        if isinstance(data, bool) or not isinstance(data, int | float):
            self.fail("invalid")
        if isinstance(data, float) and not data.is_integer():
            self.fail("invalid")
        return super().to_internal_value(data)


class MoneyField(serializers.DecimalField):
    """An amount of zero or more, as SPEC §6 has money: a decimal string (``"10.00"``), never
    a JSON number. Plain digits only, at most ``max_digits - decimal_places`` before the point
    and ``decimal_places`` after; no sign, exponent or spaces. The schema documents exactly
    this as its ``pattern`` (common.web.views.MoneyFieldSchema)."""

    default_error_messages = {
        "format": 'Must be an amount of zero or more given as a JSON string of digits, e.g. "10.00": '
        "at most {whole} digits before the point and {places} after it."
    }

    def __init__(self, *, max_digits: int, decimal_places: int = 2, **kwargs: Any) -> None:
        super().__init__(
            max_digits=max_digits, decimal_places=decimal_places, min_value=Decimal("0.00"), **kwargs
        )
        self.pattern = rf"^[0-9]{{1,{max_digits - decimal_places}}}(\.[0-9]{{1,{decimal_places}}})?$"

    def to_internal_value(self, data: Any) -> Decimal:
        if not isinstance(data, str) or not re.fullmatch(self.pattern, data):
            self.fail("format", whole=self.max_digits - self.decimal_places, places=self.decimal_places)
        return super().to_internal_value(data)


def text_query_param(request: Any, name: str) -> str | None:
    """The query parameter ``name`` as given; a NUL in it (no stored text has one) is a 400."""
    value = request.query_params.get(name)
    if value is not None and "\x00" in value:
        raise exceptions.ValidationError({name: ["Null characters are not allowed."]})
    return value


def uuid_query_param(request: Any, name: str) -> str | None:
    """The query parameter ``name`` if given: a UUID, or a 400 naming the parameter (blank too)."""
    value = request.query_params.get(name)
    if value is None:
        return None
    try:
        return str(uuid.UUID(value))
    except ValueError as exc:
        raise exceptions.ValidationError({name: ["Must be a UUID."]}) from exc


class Conflict(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "The request conflicts with the current state."
    default_code = "conflict"


def _flatten(detail: Any) -> Any:
    if isinstance(detail, dict):
        return {key: _flatten(value) for key, value in detail.items()}
    if isinstance(detail, list):
        return [_flatten(item) for item in detail]
    return str(detail)


def _summarize(fields: Any, prefix: str = "") -> list[str]:
    parts: list[str] = []
    if isinstance(fields, dict):
        for key, value in fields.items():
            if key == "non_field_errors" and prefix:  # "items: ...", not "items.non_field_errors: ..."
                parts += _summarize(value, prefix)
            else:
                parts += _summarize(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(fields, list):
        if all(isinstance(item, str) for item in fields):
            parts.append(f"{prefix or 'body'}: {' '.join(fields)}")
        else:
            for index, item in enumerate(fields):
                if item:
                    parts += _summarize(item, f"{prefix}[{index}]")
    else:
        parts.append(f"{prefix or 'body'}: {fields}")
    return parts


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """Every API error as ``{"error": code, "message": text[, "fields": {...}]}``."""
    # Imported here: rest_framework.views imports this module (via its settings).
    from rest_framework.views import exception_handler as drf_exception_handler

    # Django's own (e.g. Http404 for an unknown ``?format=``) as DRF's handler takes them,
    # so that they get this shape too rather than DRF's ``{"detail": ...}``.
    if isinstance(exc, Http404):
        exc = exceptions.NotFound(*exc.args)
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied(*exc.args)
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        fields = _flatten(exc.detail)
        if not isinstance(fields, dict):
            fields = {"non_field_errors": fields}
        response.data = {
            "error": "validation_failed",
            "message": "; ".join(_summarize(fields)),
            "fields": fields,
        }
    elif isinstance(exc, exceptions.APIException):
        detail = exc.detail
        response.data = {
            "error": getattr(exc, "default_code", "error"),
            "message": str(detail) if not isinstance(detail, dict | list) else _flatten(detail),
        }
    return response


def json_error(status_code: int, error: str, message: str) -> JsonResponse:
    return JsonResponse({"error": error, "message": message}, status=status_code)


def handler404(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return json_error(404, "not_found", f"No resource at {request.path}.")


def handler500(request: HttpRequest) -> JsonResponse:
    return json_error(500, "server_error", "Internal error; see the service log.")


# A dependency away: the client gets a 503 it can act on, not a 500 "see the service log".
RETRY_AFTER_SECONDS = 5


def _note_unavailable(sender: Any, request: HttpRequest | None = None, **_: Any) -> None:
    """Django sends this with the exception being handled, before it renders its 500 (or,
    with DEBUG, its technical page): note on the request when the database is what failed."""
    if request is not None and isinstance(sys.exc_info()[1], OperationalError | InterfaceError):
        request.saga_unavailable = "database"


got_request_exception.connect(_note_unavailable, dispatch_uid="saga-unavailable")


def unavailable(what: str) -> JsonResponse:
    response = JsonResponse(
        {
            "error": "service_unavailable",
            "unavailable": what,
            "message": (
                f"The {settings.SERVICE_NAME} service cannot reach its {what}. Retry in "
                f"{RETRY_AFTER_SECONDS} s; repeating the request is safe (a POST that placed an "
                "order: with the same Idempotency-Key)."
            ),
        },
        status=503,
    )
    response["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


class BodySizeLimitMiddleware:
    """The edge of every API: refuse bodies it cannot bound, and answer every error in JSON.

    A request that failed because the database is away answers 503 with ``Retry-After``
    on every endpoint, the admin's included.

    A body over ``DATA_UPLOAD_MAX_MEMORY_SIZE`` gets a JSON 413 up front; a chunked body
    (no Content-Length) a JSON 411, since Django under WSGI would read it as empty.
    Errors Django renders itself (an unknown URL, or with ``DEBUG`` on its HTML
    technical pages, which bypass ``handler404``/``handler500``) are turned into the
    API's JSON error shape, except in the admin.
    """

    def __init__(self, get_response: Any) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        refused = self._refuse_body(request)
        if refused is not None:
            return refused
        response = self.get_response(request)
        away = getattr(request, "saga_unavailable", None)
        if away is not None and response.status_code >= 500:
            return unavailable(away)
        return self._as_json_error(request, response)

    @staticmethod
    def _refuse_body(request: HttpRequest) -> HttpResponse | None:
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return json_error(400, "bad_request", "Content-Length is not a number.")
        if length > limit:
            return json_error(
                413, "payload_too_large", f"Request body is {length} bytes; the limit is {limit}."
            )
        if not length and "chunked" in request.META.get("HTTP_TRANSFER_ENCODING", "").lower():
            return json_error(
                411,
                "length_required",
                "Send the request body with a Content-Length header; chunked bodies are not accepted.",
            )
        return None

    @staticmethod
    def _as_json_error(request: HttpRequest, response: HttpResponse) -> HttpResponse:
        if response.status_code < 400 or request.path.startswith("/admin/"):
            return response
        if response.get("Content-Type", "").startswith("application/json"):
            return response
        if response.status_code == 404:
            return handler404(request)
        if response.status_code >= 500:
            return handler500(request)
        return json_error(response.status_code, "error", f"{response.reason_phrase}.")


class Pagination(PageNumberPagination):
    """Pages of ``page_size`` (1 to 500; more is capped at 500): a ``page_size`` that is not
    a positive whole number is a 400, not silently the default."""

    page_size_query_param = "page_size"
    max_page_size = 500

    def get_page_size(self, request: Any) -> int:
        raw = request.query_params.get(self.page_size_query_param)
        if raw is None:
            return self.page_size
        digits = raw.lstrip("0") if raw.isascii() and raw.isdigit() else ""
        if not digits:
            raise exceptions.ValidationError({self.page_size_query_param: ["Must be a whole number from 1."]})
        return self.max_page_size if len(digits) > 6 else min(int(digits), self.max_page_size)

    def get_page_number(self, request: Any, paginator: Any) -> Any:
        # A blank ``page`` is an invalid page (404) like ``page=x``, not silently the first.
        if request.query_params.get(self.page_query_param) == "":
            return ""
        return super().get_page_number(request, paginator)

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            parameter["schema"]["minimum"] = 1
            if parameter["name"] == self.page_size_query_param:
                parameter["description"] = f"Results per page: 1 to {self.max_page_size} (more is capped)."
        return parameters
