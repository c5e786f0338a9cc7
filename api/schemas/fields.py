"""Marshmallow fields that accept JSON types exactly (no "1" for 1, no true for 1), and error paths."""

from __future__ import annotations

import numbers
from typing import Any

from marshmallow import Schema, ValidationError, fields, validate

from shared.errors import InvalidRequestError


class StrictFloat(fields.Float):
    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise ValidationError(f"expected a number, but got {_json_type(value)} instead.")
        return super()._deserialize(value, attr, data, **kwargs)


class StrictInteger(fields.Integer):
    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise ValidationError(f"expected an integer, but got {_json_type(value)} instead.")
        return int(value)


class StrictBoolean(fields.Boolean):
    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> bool:
        if not isinstance(value, bool):
            raise ValidationError(f"expected a boolean, but got {_json_type(value)} instead.")
        return value


def unsupported_value(value: Any, allowed: tuple[str, ...], *more: str) -> str:
    """OpenAI's wording for a value outside a fixed set (`more` describes other accepted forms)."""
    return f"unsupported value {value!r}; supported values are: " + ", ".join(
        [repr(a) for a in allowed] + list(more)) + "."


def one_of(*allowed: str) -> validate.OneOf:
    """A validator for a fixed set of strings, whose error names the set."""
    listed = ", ".join(repr(a) for a in allowed)
    return validate.OneOf(allowed, error="unsupported value {input!r}; supported values are: " + listed + ".")


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, numbers.Number):
        return "a number"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def first_error(messages: Any, path: str = "") -> tuple[str | None, str]:
    """The first error in marshmallow's nested messages, as (param path, message)."""
    if isinstance(messages, dict):
        for key, inner in messages.items():
            if key == "_schema":
                return first_error(inner, path)
            step = f"[{key}]" if isinstance(key, int) else (f".{key}" if path else str(key))
            return first_error(inner, path + step)
        return (path or None), "Invalid request."
    if isinstance(messages, list) and messages:
        first = messages[0]
        if isinstance(first, (dict, list)):
            return first_error(first, path)
        return (path or None), _describe(path, str(first))
    return (path or None), _describe(path, str(messages))


def _describe(path: str, message: str) -> str:
    if message == "Unknown field.":
        return f"Unrecognized request argument supplied: {path}"
    if message == "Missing data for required field.":
        return f"Missing required parameter: '{path}'."
    if message == "Field may not be null.":
        return f"Invalid value for '{path}': null is not allowed."
    if not path:
        return message
    return f"Invalid '{path}': {message[:1].lower()}{message[1:]}"


def load_body(schema: Schema, body: Any) -> Any:
    """Validate a decoded JSON body with `schema`; raises InvalidRequestError naming the first
    offending field (`messages[0].content`), as OpenAI's `param` does."""
    if not isinstance(body, dict):
        raise InvalidRequestError("Invalid request body: expected a JSON object.", param=None)
    try:
        return schema.load(body)
    except ValidationError as exc:
        param, message = first_error(exc.normalized_messages())
        raise InvalidRequestError(message, param=param) from None
