"""A DRF serializer's shape, compiled once, for the hot endpoints.

DRF builds and deep-copies every field of a serializer (and of each nested one) per call:
on the order POST that was a sixth of the web process's CPU for the input and half of it
for the output (py-spy). The serializer stays the one source of the shape — which fields,
their names, sources, limits and formats; these read its fields once, at import:

- ``plain_input(Serializer)`` returns a function giving ``validated_data`` for plainly valid
  input, or None for anything else (an error, or input DRF would accept only after a
  conversion: ``5.0``, a tab, an unknown key it ignores), which then goes through the
  serializer, which has the last word and words the 400;
- ``representer(Serializer, sources=...)`` returns a function giving
  ``Serializer(instance).data``, with each field's own ``to_representation``.

A field kind these do not know makes them refuse at import: a serializer cannot grow a
field the fast path would skip. Tests hold each against its serializer
(tests/order/test_order_in.py, tests/order/test_order.py).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models.manager import BaseManager
from rest_framework import serializers
from rest_framework.exceptions import ValidationError
from rest_framework.fields import empty

_REFUSED = object()  # what a checker returns for input it leaves to the serializer
Checker = Callable[[Any], Any]


def plain_input(serializer_class: type[serializers.Serializer]) -> Callable[[Any], dict[str, Any] | None]:
    """``serializer_class(data=data).validated_data`` for plainly valid ``data``, else None."""
    check = _object_checker(serializer_class())

    def plain(data: Any) -> dict[str, Any] | None:
        value = check(data)
        return None if value is _REFUSED else value

    return plain


def _object_checker(serializer: serializers.Serializer) -> Checker:
    fields = [(name, field, _checker(field)) for name, field in serializer.fields.items()]
    for name, field, _ in fields:
        if field.source != name or field.default is not empty or field.read_only:
            raise TypeError(f"{type(serializer).__name__}.{name}: a source, default or read-only field")
    known = frozenset(name for name, _, _ in fields)
    required = frozenset(name for name, field, _ in fields if field.required)
    field_validators = [
        (name, getattr(serializer, f"validate_{name}"))
        for name, _, _ in fields
        if hasattr(serializer, f"validate_{name}")
    ]
    if type(serializer).validate is not serializers.Serializer.validate:
        raise TypeError(f"{type(serializer).__name__}.validate(): the fast path cannot run it")

    def check(data: Any) -> Any:
        if type(data) is not dict or not required <= data.keys() <= known:
            return _REFUSED
        out = {}
        for name, _, check_field in fields:  # the serializer's order, whatever the client's
            if name in data:
                value = check_field(data[name])
                if value is _REFUSED:
                    return _REFUSED
                out[name] = value
        try:
            for name, validate in field_validators:
                out[name] = validate(out[name])
        except (ValidationError, DjangoValidationError):
            return _REFUSED
        return out

    return check


def _checker(field: serializers.Field) -> Checker:
    if isinstance(field, serializers.ListSerializer):
        return _list_checker(field)
    if isinstance(field, serializers.Serializer):
        return _object_checker(field)
    if isinstance(field, serializers.CharField):  # RegexField too: its pattern is a validator
        return _text_checker(field)
    if isinstance(field, serializers.IntegerField):
        return _whole_number_checker(field)
    raise TypeError(f"the fast path does not know {type(field).__name__} ({field.field_name})")


def _text_checker(field: serializers.CharField) -> Checker:
    low = max(field.min_length or 0, 0 if field.allow_blank else 1)
    high = field.max_length if field.max_length is not None else float("inf")
    validators = field.validators  # the length limits, no NUL, no surrogate, a RegexField's pattern
    trims = field.trim_whitespace

    def check(value: Any) -> Any:
        # Printable text only: no control character, NUL or surrogate (DRF refuses those, or
        # for a tab, might accept it: the serializer decides).
        if type(value) is not str or not low <= len(value) <= high or not value.isprintable():
            return _REFUSED
        if trims and value != value.strip():
            return _REFUSED
        try:
            for validate in validators:
                validate(value)
        except (ValidationError, DjangoValidationError):
            return _REFUSED
        return value

    return check


def _whole_number_checker(field: serializers.IntegerField) -> Checker:
    # A JSON integer is taken as it is; what DRF might convert (5.0, "5") is left to it.
    low = field.min_value if field.min_value is not None else float("-inf")
    high = field.max_value if field.max_value is not None else float("inf")

    def check(value: Any) -> Any:
        return value if type(value) is int and low <= value <= high else _REFUSED

    return check


def _list_checker(field: serializers.ListSerializer) -> Checker:
    low = max(field.min_length or 0, 0 if field.allow_empty else 1)
    high = field.max_length if field.max_length is not None else float("inf")
    check_child = _checker(field.child)

    def check(value: Any) -> Any:
        if type(value) is not list or not low <= len(value) <= high:
            return _REFUSED
        out = [check_child(item) for item in value]
        return _REFUSED if any(item is _REFUSED for item in out) else out

    return check


# ---------------------------------------------------------------- output


def representer(
    serializer_class: type[serializers.Serializer],
    sources: Mapping[str, Callable[[Any], Any]] | None = None,
) -> Callable[[Any], dict[str, Any]]:
    """``serializer_class(instance).data``, built directly. ``sources``: how to read a field
    of the top level another way than its ``source`` (e.g. rows already fetched)."""
    return _object_representer(serializer_class(), dict(sources or {}))


def _object_representer(
    serializer: serializers.Serializer, sources: dict[str, Callable[[Any], Any]]
) -> Callable[[Any], dict[str, Any]]:
    steps = [
        (name, sources.get(name) or _getter(field), field.required, _converter(field))
        for name, field in serializer.fields.items()
    ]

    def represent(instance: Any) -> dict[str, Any]:
        out = {}
        for name, get, required, convert in steps:
            try:
                value = get(instance)
            except KeyError:  # a mapping without an optional key: DRF skips the field
                if required:
                    raise
                continue
            out[name] = None if value is None else convert(value)
        return out

    return represent


def _getter(field: serializers.Field) -> Callable[[Any], Any]:
    (attr,) = field.source_attrs  # one level: a dotted source is not used here

    def get(instance: Any) -> Any:
        if isinstance(instance, Mapping):
            return instance[attr]
        return getattr(instance, attr)

    return get


def _converter(field: serializers.Field) -> Callable[[Any], Any]:
    if isinstance(field, serializers.ListSerializer):
        child = _object_representer(field.child, {})
        # as ListSerializer does: a relation's manager is read through .all()
        return lambda values: [
            child(value) for value in (values.all() if isinstance(values, BaseManager) else values)
        ]
    if isinstance(field, serializers.Serializer):
        return _object_representer(field, {})
    return field.to_representation
