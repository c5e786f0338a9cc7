"""The /v1/chat/completions request body: validated with marshmallow, returned as a typed object.

Every rejection names the offending field in OpenAI's `param` style (`messages[0].content`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, post_load, validate, validates_schema

from api.schemas.fields import StrictBoolean, StrictFloat, StrictInteger, load_body, one_of, unsupported_value
from api.schemas.tools import (MessageToolCallSchema, ResponseFormat, ResponseFormatSchema, ToolChoice,
                               ToolChoiceField, ToolSchema, check_tools, response_format_from)

ROLES = ("system", "developer", "user", "assistant", "tool")
MAX_STOP_SEQUENCES = 4
INT64_MAX = 2**63 - 1

# Parameters of OpenAI's API that LlamaGate does not implement yet: rejected by name rather than
# silently ignored, so a client never believes a constraint was applied when it was not.
NOT_YET_SUPPORTED = ("functions", "function_call", "audio", "modalities",
                     "prediction", "web_search_options", "reasoning_effort", "top_logprobs")
# Accepted and ignored: they change nothing about the generated text.
IGNORED = ("metadata", "store", "service_tier", "prompt_cache_key", "safety_identifier")


IMAGE_DETAILS = ("auto", "low", "high")
PART_TYPES = ("text", "image_url")


class MessageContent(fields.Field):
    """A message's content: a string, or an array of content parts (text, and images)."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        if value is None or isinstance(value, str):
            return value
        if not isinstance(value, list):
            raise ValidationError("expected a string or an array of content parts.")
        errors: dict[int, Any] = {}
        for index, part in enumerate(value):
            problem = _content_part_error(part)
            if problem is not None:
                errors[index] = problem
        if errors:
            raise ValidationError(errors)
        return value


def _content_part_error(part: Any) -> Any:
    if not isinstance(part, dict):
        return ["expected an object."]
    kind = part.get("type")
    if kind == "text":
        if not isinstance(part.get("text"), str):
            return {"text": ["expected a string."]}
        return None
    if kind == "image_url":
        return _image_part_error(part)
    return {"type": [f"unsupported content part type {kind!r}; supported types are: "
                     + ", ".join(repr(t) for t in PART_TYPES) + "."]}


def _image_part_error(part: dict[str, Any]) -> Any:
    unknown = sorted(set(part) - {"type", "image_url"})
    if unknown:
        return {unknown[0]: ["Unknown field."]}
    image = part.get("image_url")
    if not isinstance(image, dict):
        return {"image_url": ["expected an object with a 'url'."]}
    unknown = sorted(set(image) - {"url", "detail"})
    if unknown:
        return {"image_url": {unknown[0]: ["Unknown field."]}}
    if not isinstance(image.get("url"), str) or not image["url"]:
        return {"image_url": {"url": ["expected a data URL or an http(s) URL."]}}
    if image.get("detail", "auto") not in IMAGE_DETAILS:
        return {"image_url": {"detail": [unsupported_value(image.get("detail"), IMAGE_DETAILS)]}}
    return None


def image_parts(content: Any) -> list[tuple[int, dict[str, Any]]]:
    """The image parts of a message's content, with their positions."""
    if not isinstance(content, list):
        return []
    return [(index, part) for index, part in enumerate(content) if part.get("type") == "image_url"]


class MessageSchema(Schema):
    class Meta:
        unknown = RAISE

    role = fields.String(required=True, validate=one_of(*ROLES))
    content = MessageContent(allow_none=True)  # required, except in assistant messages (checked below)
    name = fields.String()
    tool_call_id = fields.String()
    tool_calls = fields.List(fields.Nested(MessageToolCallSchema), allow_none=True)
    refusal = fields.String(allow_none=True)

    @validates_schema
    def _check_role_fields(self, data: dict[str, Any], **kwargs: Any) -> None:
        if "content" not in data and data.get("role") != "assistant":
            raise ValidationError("Missing data for required field.", "content")
        if data.get("content") is None and data.get("role") != "assistant":
            raise ValidationError("content may only be null in assistant messages.",
                                  "content")
        images = image_parts(data.get("content"))
        if images and data.get("role") != "user":
            raise ValidationError({"content": {images[0][0]: ["images are only allowed in user messages."]}})
        if data.get("tool_calls") is not None and data.get("role") != "assistant":
            raise ValidationError("only assistant messages may carry 'tool_calls'.", "tool_calls")
        if data.get("role") == "tool" and not data.get("tool_call_id"):
            raise ValidationError("a tool message needs 'tool_call_id'.",
                                  "tool_call_id")


class StreamOptionsSchema(Schema):
    class Meta:
        unknown = RAISE

    include_usage = StrictBoolean()


class StopField(fields.Field):
    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> tuple[str, ...]:
        if isinstance(value, str):
            return (value,)
        if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
            raise ValidationError("expected a string or an array of strings.")
        if len(value) > MAX_STOP_SEQUENCES:
            raise ValidationError(f"at most {MAX_STOP_SEQUENCES} stop sequences are allowed, "
                                  f"got {len(value)}.")
        return tuple(value)


@dataclass(frozen=True)
class ChatCompletionRequest:
    model: str
    messages: list[dict[str, Any]]
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int | None = None
    stream: bool = False
    include_usage: bool = False
    stop: tuple[str, ...] = ()
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    n: int = 1
    user: str | None = None
    response_format: ResponseFormat = ResponseFormat("text")
    tools: tuple[dict[str, Any], ...] = ()
    tool_choice: ToolChoice | None = None  # None: not given ("auto" when there are tools)
    parallel_tool_calls: bool = True

    @property
    def effective_tool_choice(self) -> ToolChoice:
        if self.tool_choice is not None:
            return self.tool_choice
        return ToolChoice("auto" if self.tools else "none")


class ChatCompletionSchema(Schema):
    class Meta:
        unknown = RAISE
        # Checked (or ignored) by name in _check_combinations, whatever their type.
        include = {name: fields.Raw(allow_none=True) for name in IGNORED + NOT_YET_SUPPORTED}

    model = fields.String(required=True, validate=validate.Length(min=1))
    messages = fields.List(fields.Nested(MessageSchema), required=True,
                           validate=validate.Length(min=1, error="expected at least one message."))
    temperature = StrictFloat(allow_none=True, validate=validate.Range(0, 2))
    top_p = StrictFloat(allow_none=True, validate=validate.Range(0, 1))
    max_tokens = StrictInteger(allow_none=True, validate=validate.Range(min=1))
    max_completion_tokens = StrictInteger(allow_none=True, validate=validate.Range(min=1))
    stream = StrictBoolean(allow_none=True)
    stream_options = fields.Nested(StreamOptionsSchema, allow_none=True)
    stop = StopField(allow_none=True)
    seed = StrictInteger(allow_none=True, validate=validate.Range(-INT64_MAX - 1, INT64_MAX))
    presence_penalty = StrictFloat(allow_none=True, validate=validate.Range(-2, 2))
    frequency_penalty = StrictFloat(allow_none=True, validate=validate.Range(-2, 2))
    n = StrictInteger(allow_none=True, validate=validate.Range(min=1))
    user = fields.String(allow_none=True)
    logprobs = StrictBoolean(allow_none=True)
    logit_bias = fields.Dict(keys=fields.String(), values=fields.Raw(), allow_none=True)
    response_format = fields.Nested(ResponseFormatSchema, allow_none=True)
    tools = fields.List(fields.Nested(ToolSchema), allow_none=True)
    tool_choice = ToolChoiceField(allow_none=True)
    parallel_tool_calls = StrictBoolean(allow_none=True)

    @validates_schema
    def _check_combinations(self, data: dict[str, Any], **kwargs: Any) -> None:
        for name in NOT_YET_SUPPORTED:
            if data.get(name) is not None:
                raise ValidationError(f"'{name}' is not supported by LlamaGate yet.", name)
        if data.get("logprobs"):
            raise ValidationError("'logprobs' is not supported by LlamaGate yet.", "logprobs")
        if data.get("logit_bias"):
            raise ValidationError("'logit_bias' is not supported by LlamaGate yet.", "logit_bias")
        check_tools(data.get("tools"), data.get("tool_choice"))
        if data.get("stream_options") is not None and not data.get("stream"):
            raise ValidationError("The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                                  "stream_options")

    @post_load
    def _build(self, data: dict[str, Any], **kwargs: Any) -> ChatCompletionRequest:
        def value(name: str, default: Any) -> Any:
            found = data.get(name)
            return default if found is None else found

        return ChatCompletionRequest(
            model=data["model"],
            messages=data["messages"],
            temperature=float(value("temperature", 1.0)),
            top_p=float(value("top_p", 1.0)),
            # max_completion_tokens is the newer name; it wins when both are given.
            max_tokens=value("max_completion_tokens", data.get("max_tokens")),
            stream=bool(value("stream", False)),
            include_usage=bool((data.get("stream_options") or {}).get("include_usage", False)),
            stop=value("stop", ()),
            seed=data.get("seed"),
            presence_penalty=float(value("presence_penalty", 0.0)),
            frequency_penalty=float(value("frequency_penalty", 0.0)),
            n=int(value("n", 1)),
            user=data.get("user"),
            response_format=response_format_from(data.get("response_format")),
            tools=tuple(data.get("tools") or ()),
            tool_choice=data.get("tool_choice"),
            parallel_tool_calls=bool(value("parallel_tool_calls", True)),
        )


_SCHEMA = ChatCompletionSchema()


def parse_chat_completion(body: Any) -> ChatCompletionRequest:
    """Validate a decoded JSON body; raises InvalidRequestError naming the first offending field."""
    return load_body(_SCHEMA, body)
