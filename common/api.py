"""REST plumbing shared by the services: auth, JSON errors, limits, pagination."""

from __future__ import annotations

import hmac
import logging
import uuid
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from rest_framework import exceptions, serializers, status
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
        if not hmac.compare_digest(token.encode(), settings.SAGA_API_TOKEN.encode()):
            raise exceptions.AuthenticationFailed("Invalid API token.")
        return ServiceUser(), token

    def authenticate_header(self, request: Any) -> str:
        return 'Bearer realm="api"'


class StrictCharField(serializers.CharField):
    """A string field that refuses JSON numbers and booleans instead of coercing them."""

    default_error_messages = {"invalid": "Must be a string."}

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


def uuid_query_param(request: Any, name: str) -> str | None:
    """The query parameter ``name`` if given: a UUID, or a 400 naming the parameter."""
    value = request.query_params.get(name)
    if not value:
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


class BodySizeLimitMiddleware:
    """The edge of every API: refuse bodies it cannot bound, and answer every error in JSON.

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
        return self._as_json_error(request, self.get_response(request))

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
    page_size_query_param = "page_size"
    max_page_size = 500
