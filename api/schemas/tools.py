"""The request fields that shape the output: `response_format`, `tools`, `tool_choice`, and the
`tool_calls` of earlier assistant turns."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates_schema

from api.schemas.fields import StrictBoolean, one_of, unsupported_value

FUNCTION_NAME = validate.Regexp(r"^[a-zA-Z0-9_-]{1,64}$",
                                error="expected a name of 1 to 64 letters, digits, underscores or dashes.")
MAX_TOOLS = 128


@dataclass(frozen=True)
class ResponseFormat:
    type: str  # "text", "json_object" or "json_schema"
    schema: Optional[dict[str, Any]] = None
    strict: bool = False
    name: Optional[str] = None


@dataclass(frozen=True)
class ToolChoice:
    mode: str  # "none", "auto", "required", or "function" (then `name` is the one function)
    name: Optional[str] = None


class JsonSchemaSchema(Schema):
    class Meta:
        unknown = RAISE

    name = fields.String(required=True, validate=FUNCTION_NAME)
    description = fields.String()
    schema = fields.Dict(allow_none=True)
    strict = StrictBoolean(allow_none=True)


class ResponseFormatSchema(Schema):
    class Meta:
        unknown = RAISE

    type = fields.String(required=True, validate=one_of("text", "json_object", "json_schema"))
    json_schema = fields.Nested(JsonSchemaSchema)

    @validates_schema
    def _check_schema_present(self, data: dict[str, Any], **kwargs: Any) -> None:
        if data.get("type") == "json_schema" and "json_schema" not in data:
            raise ValidationError("Missing data for required field.", "json_schema")


def response_format_from(data: Optional[dict[str, Any]]) -> ResponseFormat:
    if not data:
        return ResponseFormat("text")
    spec = data.get("json_schema") or {}
    return ResponseFormat(data["type"], schema=spec.get("schema") or {}, strict=bool(spec.get("strict")),
                          name=spec.get("name"))


class FunctionSchema(Schema):
    class Meta:
        unknown = RAISE

    name = fields.String(required=True, validate=FUNCTION_NAME)
    description = fields.String(allow_none=True)
    parameters = fields.Dict(allow_none=True)
    strict = StrictBoolean(allow_none=True)


class ToolSchema(Schema):
    class Meta:
        unknown = RAISE

    type = fields.String(required=True, validate=one_of("function"))
    function = fields.Nested(FunctionSchema, required=True)


class ToolChoiceField(fields.Field):
    """"none" | "auto" | "required" | {"type": "function", "function": {"name": ...}}."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> ToolChoice:
        if isinstance(value, str):
            if value not in ("none", "auto", "required"):
                raise ValidationError(unsupported_value(value, ("none", "auto", "required"),
                                                        "or an object naming a function"))
            return ToolChoice(value)
        if (isinstance(value, dict) and value.get("type") == "function" and isinstance(value.get("function"), dict)
                and isinstance(value["function"].get("name"), str) and set(value) == {"type", "function"}):
            return ToolChoice("function", value["function"]["name"])
        raise ValidationError("expected 'none', 'auto', 'required', or "
                              "{'type': 'function', 'function': {'name': ...}}.")


class ToolCallFunctionSchema(Schema):
    class Meta:
        unknown = RAISE

    name = fields.String(required=True)
    arguments = fields.String(required=True)


class MessageToolCallSchema(Schema):
    """A tool call in an earlier assistant turn, as the API returned it."""

    class Meta:
        unknown = RAISE

    id = fields.String(required=True)
    type = fields.String(required=True, validate=one_of("function"))
    function = fields.Nested(ToolCallFunctionSchema, required=True)


def check_tools(tools: Optional[list[dict[str, Any]]], tool_choice: Optional[ToolChoice]) -> None:
    """The rules between `tools` and `tool_choice`; raises ValidationError naming the field."""
    names = [tool["function"]["name"] for tool in tools or ()]
    if len(names) > MAX_TOOLS:
        raise ValidationError(f"at most {MAX_TOOLS} tools are allowed, got {len(names)}.", "tools")
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValidationError(f"function names must be unique; {duplicates[0]!r} appears more than once.", "tools")
    for index, tool in enumerate(tools or ()):
        parameters = tool["function"].get("parameters")
        if parameters is not None and parameters.get("type", "object") != "object":
            raise ValidationError({index: {"function": {"parameters": [
                "a function's parameters must be a JSON Schema of type 'object'."]}}}, "tools")
    if tool_choice is None:
        return
    if not tools and tool_choice.mode != "none":
        raise ValidationError("'tool_choice' is only allowed when 'tools' are specified.", "tool_choice")
    if tool_choice.mode == "function" and tool_choice.name not in names:
        raise ValidationError(f"no function named {tool_choice.name!r} in 'tools'.", "tool_choice")
