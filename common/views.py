"""Views shared by the services (kept apart from common.api, which DRF settings import)."""

from __future__ import annotations

from typing import Any

from rest_framework import exceptions, mixins, status, viewsets
from rest_framework.response import Response

from common.api import Conflict
from common.errors import AlreadyExists


class KeyedResourceViewSet(mixins.ListModelMixin, viewsets.GenericViewSet):
    """List, read one by its natural key, create through a service (409 if the key is taken).

    A subclass names its ``serializer_class``, ``lookup_field`` and ``noun``, and
    implements ``fetch`` (a selector) and ``create_with`` (a service).
    """

    lookup_value_regex = "[^/]{1,64}"
    noun = "Resource"

    def fetch(self, key: str) -> Any:
        raise NotImplementedError

    def create_with(self, data: dict[str, Any]) -> Any:
        raise NotImplementedError

    def retrieve(self, request: Any, **kwargs: str) -> Response:
        key = kwargs[self.lookup_field]
        found = self.fetch(key)
        if found is None:
            raise exceptions.NotFound(f"{self.noun} {key} does not exist.")
        return Response(self.get_serializer(found).data)

    def create(self, request: Any, *args: Any, **kwargs: Any) -> Response:
        incoming = self.get_serializer(data=request.data)
        incoming.is_valid(raise_exception=True)
        try:
            created = self.create_with(dict(incoming.validated_data))
        except AlreadyExists as exc:
            raise Conflict(str(exc)) from exc
        return Response(self.get_serializer(created).data, status=status.HTTP_201_CREATED)
