"""Stripe's form encoding and parameter rules, checked against the shapes stripe-python ships.

The ``stripe.params`` TypedDicts are generated from Stripe's OpenAPI spec, so they say which
parameters exist (at every nesting level), which are required, their types, their enum values
and which may be emptied (``Literal['']``). Checking requests against them rejects what
Stripe rejects without hand-copying Stripe's API here.
"""

from __future__ import annotations

import re
import sys
import typing
from decimal import Decimal
from functools import cache
from typing import Any, ForwardRef, Literal, NotRequired, Required, Union, get_args, get_origin
from urllib.parse import parse_qsl

import stripe
import typing_extensions

from stripe_local.errors import StripeError

# Keys of the client's request options (api_key, idempotency_key, headers, ...): never API params.
REQUEST_OPTION_KEYS = frozenset(stripe.RequestOptions.__annotations__)
INTEGER = re.compile(r"-?[0-9]+")
NUMBER = re.compile(r"-?[0-9]+(\.[0-9]+)?")
METADATA_MAX_KEYS = 50
METADATA_KEY_MAX_LENGTH = 40
METADATA_VALUE_MAX_LENGTH = 500


class _Anything:
    """A type the checker cannot resolve (e.g. a name only imported for type checkers)."""


ANYTHING = _Anything()
WRAPPERS = (NotRequired, Required, typing_extensions.NotRequired, typing_extensions.Required)


def parse_form(body: bytes) -> dict[str, Any]:
    """Stripe's form encoding: ``a[b][c]=v`` becomes ``{"a": {"b": {"c": "v"}}}``.

    Arrays arrive as ``a[0]=x`` (stripe-python) or ``a[]=x`` (curl); both become
    ``{"a": {"0": "x"}}``.
    """
    result: dict[str, Any] = {}
    try:
        text = body.decode()
    except UnicodeDecodeError:
        raise StripeError(400, "The request body is not valid UTF-8.") from None
    for raw_key, value in parse_qsl(text, keep_blank_values=True):
        head, _, rest = raw_key.partition("[")
        parts = [head]
        if rest:
            if not rest.endswith("]"):
                raise StripeError(400, f"Invalid parameter name: {raw_key}", param=raw_key)
            parts += rest[:-1].split("][")
        if not parts[0] or any(not part for part in parts[1:-1]):
            raise StripeError(400, f"Invalid parameter name: {raw_key}", param=raw_key)
        target = result
        for part in parts[:-1]:
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                raise StripeError(400, f"Invalid parameter nesting in {raw_key}.", param=raw_key)
        last = parts[-1] or str(len(target))  # "a[]" appends
        if isinstance(target.get(last), dict):
            raise StripeError(400, f"Invalid parameter nesting in {raw_key}.", param=raw_key)
        target[last] = value
    return result


# Reading the TypedDicts --------------------------------------------------------------------


def _split_union(text: str) -> list[str]:
    """``"Literal['']|Dict[str, str]"`` -> ``["Literal['']", "Dict[str, str]"]`` (depth 0 only)."""
    parts, depth, start = [], 0, 0
    for index, char in enumerate(text):
        depth += char == "["
        depth -= char == "]"
        if char == "|" and depth == 0:
            parts.append(text[start:index].strip())
            start = index + 1
    parts.append(text[start:].strip())
    return parts


def _alternatives(annotation: Any, module: str) -> list[Any]:
    """The flat list of types an annotation allows (unions and forward references resolved)."""
    if get_origin(annotation) in WRAPPERS:
        return _alternatives(get_args(annotation)[0], module)
    if isinstance(annotation, ForwardRef):
        module = getattr(annotation, "__forward_module__", None) or module
        annotation = annotation.__forward_arg__
    if isinstance(annotation, str):
        namespace = {**vars(typing), **vars(sys.modules[module])}
        result = []
        for part in _split_union(annotation):
            try:
                result += _alternatives(eval(part, namespace), module)  # the library's own text
            except Exception:
                result.append(ANYTHING)
        return result
    if get_origin(annotation) is Union or type(annotation).__name__ == "UnionType":
        return [alt for arg in get_args(annotation) for alt in _alternatives(arg, module)]
    return [annotation]


@cache
def _field_types(params_type: type) -> dict[str, tuple[Any, ...]]:
    """Each API parameter of a TypedDict with the types it allows."""
    module = params_type.__module__
    return {
        name: tuple(_alternatives(annotation, module))
        for name, annotation in params_type.__annotations__.items()
        if name not in REQUEST_OPTION_KEYS
    }


def allowed_parameters(params_type: type) -> set[str]:
    """Parameters of a ``stripe.params`` TypedDict (inherited ones included)."""
    return set(_field_types(params_type))


def required_parameters(params_type: type) -> set[str]:
    """Parameters Stripe requires (the TypedDict's required keys)."""
    return set(getattr(params_type, "__required_keys__", set())) - REQUEST_OPTION_KEYS


# Checking a request ------------------------------------------------------------------------


def check_parameters(params: dict[str, Any], params_type: type, prefix: str = "") -> None:
    """Reject unknown, missing and ill-typed parameters at every level, as Stripe does."""
    fields = _field_types(params_type)
    for name in sorted(params):
        param = f"{prefix}[{name}]" if prefix else name
        if name not in fields:
            raise StripeError(
                400, f"Received unknown parameter: {param}", code="parameter_unknown", param=param
            )
        _check_value(params[name], fields[name], param)
    for name in sorted(required_parameters(params_type) - set(params)):
        param = f"{prefix}[{name}]" if prefix else name
        raise StripeError(
            400, f"Missing required param: {param}.", code="parameter_missing", param=param
        )


def _check_value(value: Any, types: tuple[Any, ...], param: str) -> None:
    """One value against the types its parameter allows."""
    literals = {
        arg
        for t in types
        if get_origin(t) in (Literal, typing_extensions.Literal)
        for arg in get_args(t)
    }
    kinds = [t for t in types if get_origin(t) not in (Literal, typing_extensions.Literal)]
    if value == "":
        if "" in literals or ANYTHING in kinds:
            return
        raise StripeError(
            400,
            f"You passed an empty string for '{param}'. We assume empty values are an attempt "
            f"to unset a parameter; however '{param}' cannot be unset. You should remove "
            f"'{param}' from your request or supply a non-empty value.",
            code="parameter_invalid_empty",
            param=param,
        )
    if ANYTHING in kinds:
        return
    if isinstance(value, dict):
        _check_hash(value, kinds, param)
        return
    choices = sorted(str(v) for v in literals - {""})
    if choices and value not in choices:
        raise StripeError(400, f"Invalid {param}: must be one of {', '.join(choices)}", param=param)
    if choices or str in kinds:
        return
    if int in kinds and INTEGER.fullmatch(value):
        return
    if (float in kinds or Decimal in kinds) and NUMBER.fullmatch(value):
        return
    if Decimal in kinds:
        raise StripeError(400, f"Invalid decimal: {value}", param=param)
    if bool in kinds and value in ("true", "false"):
        return
    if int in kinds:
        raise StripeError(
            400, f"Invalid integer: {value}", code="parameter_invalid_integer", param=param
        )
    if bool in kinds:
        raise StripeError(400, f"Invalid boolean: {value}", param=param)
    raise StripeError(400, f"Invalid {_kind_name(kinds)}: {param} must be a hash.", param=param)


def _check_hash(value: dict[str, Any], kinds: list[Any], param: str) -> None:
    """A nested value: a sub-shape, a free hash (metadata, payload) or an array."""
    for kind in kinds:
        if typing_extensions.is_typeddict(kind):
            check_parameters(value, kind, prefix=param)
            return
    origins = {get_origin(k) for k in kinds}
    if dict in origins:
        for key, item in value.items():
            if not isinstance(item, str):
                raise StripeError(
                    400, f"Invalid {param}[{key}]: nested hashes are not allowed.", param=param
                )
        return
    if list in origins:
        if not all(key.isdigit() for key in value):
            raise StripeError(400, f"Invalid array: {param}", param=param)
        return
    if int in kinds:
        raise StripeError(
            400, "Invalid integer: a hash", code="parameter_invalid_integer", param=param
        )
    raise StripeError(400, f"Invalid {_kind_name(kinds)}: {param} cannot be a hash.", param=param)


def _kind_name(kinds: list[Any]) -> str:
    if str in kinds:
        return "string"
    if any(get_origin(k) is list for k in kinds):
        return "array"
    return "object" if any(typing_extensions.is_typeddict(k) for k in kinds) else "value"


# Reading checked values --------------------------------------------------------------------


def integer_param(params: dict[str, Any], name: str, default: int | None = None) -> int:
    """An integer parameter, or Stripe's ``parameter_invalid_integer`` error."""
    raw = params.get(name)
    if raw is None or raw == "":
        if default is None:
            raise StripeError(
                400, f"Missing required param: {name}.", code="parameter_missing", param=name
            )
        return default
    if not isinstance(raw, str) or not INTEGER.fullmatch(raw):
        shown = raw if isinstance(raw, str) else "a hash"
        raise StripeError(
            400, f"Invalid integer: {shown}", code="parameter_invalid_integer", param=name
        )
    return int(raw)


def string_param(params: dict[str, Any], name: str) -> str | None:
    """A string parameter (None when absent or empty), rejecting hashes."""
    raw = params.get(name)
    if raw is not None and not isinstance(raw, str):
        raise StripeError(400, f"Invalid string: {name} must be a string, not a hash.", param=name)
    return raw or None


def hash_param(params: dict[str, Any], name: str) -> dict[str, Any]:
    """A hash parameter (``{}`` when absent or emptied), rejecting plain strings."""
    raw = params.get(name, {})
    if raw == "":
        return {}
    if not isinstance(raw, dict):
        raise StripeError(400, f"Invalid object: {name} must be a hash.", param=name)
    return raw


def metadata_param(params: dict[str, Any]) -> dict[str, str]:
    """``metadata`` within Stripe's limits: 50 keys, keys of 40 and values of 500 characters."""
    metadata = hash_param(params, "metadata")
    if len(metadata) > METADATA_MAX_KEYS:
        raise StripeError(
            400, f"Invalid metadata: at most {METADATA_MAX_KEYS} keys.", param="metadata"
        )
    for key, value in metadata.items():
        if len(key) > METADATA_KEY_MAX_LENGTH:
            raise StripeError(
                400,
                f"Invalid metadata: keys can be at most {METADATA_KEY_MAX_LENGTH} characters.",
                param=f"metadata[{key}]",
            )
        if not isinstance(value, str) or len(value) > METADATA_VALUE_MAX_LENGTH:
            raise StripeError(
                400,
                f"Invalid metadata: values must be strings of at most "
                f"{METADATA_VALUE_MAX_LENGTH} characters.",
                param=f"metadata[{key}]",
            )
    return {key: value for key, value in metadata.items() if value != ""}
