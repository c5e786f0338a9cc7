"""The /v1/embeddings request body: validated with marshmallow, returned as a typed object.

`input` comes in OpenAI's four shapes (a string, an array of strings, an array of token ids, an
array of token-id arrays) and leaves as either a list of texts or a list of token-id lists.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, post_load, validate

from api.schemas.fields import StrictInteger, load_body, one_of

MAX_INPUTS = 2048  # inputs per request, as OpenAI allows
ENCODING_FORMATS = ("float", "base64")
INPUT_SHAPES = ("expected a string, an array of strings, an array of token ids (integers) or an array of "
                "token-id arrays.")


@dataclass(frozen=True)
class EmbeddingsRequest:
    model: str
    texts: list[str] | None  # exactly one of texts and token_ids is set
    token_ids: list[list[int]] | None
    encoding_format: str = "float"
    dimensions: int | None = None
    user: str | None = None

    @property
    def input_count(self) -> int:
        return len(self.texts if self.texts is not None else self.token_ids)


def _is_token_id(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


class EmbeddingInput(fields.Field):
    """Normalizes `input` to ("texts", [...]) or ("token_ids", [[...], ...])."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> tuple[str, list]:
        if isinstance(value, str):
            if not value:
                raise ValidationError("it must not be an empty string.")
            return "texts", [value]
        if not isinstance(value, list):
            raise ValidationError(INPUT_SHAPES)
        if not value:
            raise ValidationError("it must not be an empty array.")
        if len(value) > MAX_INPUTS:
            raise ValidationError(f"it holds {len(value)} inputs; at most {MAX_INPUTS} are allowed per request.")
        first = value[0]
        if isinstance(first, str):
            return "texts", _texts(value)
        if _is_token_id(first):
            return "token_ids", [_token_ids(value, None)]
        if isinstance(first, list):
            return "token_ids", [_token_ids(ids, index) for index, ids in enumerate(value)]
        raise ValidationError(INPUT_SHAPES)


def _texts(values: list) -> list[str]:
    for index, text in enumerate(values):
        if not isinstance(text, str):
            raise ValidationError({index: ["expected a string, like the other inputs in this array."]})
        if not text:
            raise ValidationError({index: ["it must not be an empty string."]})
    return values


def _token_ids(values: Any, index: int | None) -> list[int]:
    def fail(message: str) -> ValidationError:
        return ValidationError({index: [message]} if index is not None else message)

    if not isinstance(values, list):
        raise fail("expected an array of token ids, like the other inputs in this array.")
    if not values:
        raise fail("it must not be an empty array of token ids.")
    for token in values:
        if not _is_token_id(token):
            raise fail("token ids must be integers; strings and token ids cannot be mixed.")
        if token < 0:
            raise fail("token ids must not be negative.")
    return [int(token) for token in values]


class EmbeddingsSchema(Schema):
    class Meta:
        unknown = RAISE

    model = fields.String(required=True, validate=validate.Length(min=1))
    input = EmbeddingInput(required=True)
    encoding_format = fields.String(allow_none=True, validate=one_of(*ENCODING_FORMATS))
    dimensions = StrictInteger(allow_none=True, validate=validate.Range(min=1))
    user = fields.String(allow_none=True)

    @post_load
    def _build(self, data: dict[str, Any], **kwargs: Any) -> EmbeddingsRequest:
        shape, inputs = data["input"]
        return EmbeddingsRequest(
            model=data["model"],
            texts=inputs if shape == "texts" else None,
            token_ids=inputs if shape == "token_ids" else None,
            encoding_format=data.get("encoding_format") or "float",
            dimensions=data.get("dimensions"),
            user=data.get("user"),
        )


_SCHEMA = EmbeddingsSchema()


def parse_embeddings(body: Any) -> EmbeddingsRequest:
    """Validate a decoded JSON body; raises InvalidRequestError naming the first offending field."""
    return load_body(_SCHEMA, body)
