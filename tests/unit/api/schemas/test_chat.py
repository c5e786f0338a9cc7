"""parse_chat_completion: what a /v1/chat/completions body may hold, and how refusals name the field."""

from __future__ import annotations

from typing import Any

import pytest

from api.schemas.chat import IGNORED, NOT_YET_SUPPORTED, ChatCompletionRequest, parse_chat_completion
from api.schemas.tools import ResponseFormat, ToolChoice
from shared.errors import InvalidRequestError

USER = {"role": "user", "content": "Hello"}
TOOL = {"type": "function", "function": {"name": "get_weather", "description": "The weather in a city.",
                                      "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}


def body(**fields: Any) -> dict[str, Any]:
    """A valid request body, with `fields` added or replaced."""
    return {"model": "smollm2-135m-instruct", "messages": [USER], **fields}


def rejection(payload: Any) -> InvalidRequestError:
    with pytest.raises(InvalidRequestError) as caught:
        parse_chat_completion(payload)
    return caught.value


# --- refusals: every one is a 400 naming the offending field -----------------------------------

@pytest.mark.parametrize("payload, param", [
    # The request itself.
    ({"messages": [USER]}, "model"),
    (body(model=""), "model"),
    (body(model=None), "model"),
    (body(model=7), "model"),
    ({"model": "m"}, "messages"),
    (body(messages=[]), "messages"),
    (body(messages="Hello"), "messages"),
    (body(messages=["Hello"]), "messages[0]"),
    # Messages.
    (body(messages=[{"content": "Hello"}]), "messages[0].role"),
    (body(messages=[{"role": "bot", "content": "Hello"}]), "messages[0].role"),
    (body(messages=[USER, {"role": "function", "content": "x"}]), "messages[1].role"),
    (body(messages=[{"role": "user"}]), "messages[0].content"),
    (body(messages=[{"role": "user", "content": None}]), "messages[0].content"),
    (body(messages=[{"role": "system", "content": None}]), "messages[0].content"),
    (body(messages=[{"role": "user", "content": 42}]), "messages[0].content"),
    (body(messages=[{"role": "tool", "content": "42"}]), "messages[0].tool_call_id"),
    (body(messages=[{"role": "user", "content": "x", "name": 5}]), "messages[0].name"),
    (body(messages=[{"role": "user", "content": "x", "tool_calls": []}]), "messages[0].tool_calls"),
    # Content parts.
    (body(messages=[{"role": "user", "content": ["Hello"]}]), "messages[0].content[0]"),
    # Image parts: their shape here; URLs, formats and the model's capability when the request is served.
    (body(messages=[{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "image_url"}]}]),
     "messages[0].content[1].image_url"),
    (body(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": "data:..."}]}]),
     "messages[0].content[0].image_url"),
    (body(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": 5}}]}]),
     "messages[0].content[0].image_url.url"),
    (body(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": ""}}]}]),
     "messages[0].content[0].image_url.url"),
    (body(messages=[{"role": "user", "content": [{"type": "image_url",
                                                  "image_url": {"url": "x", "detail": "ultra"}}]}]),
     "messages[0].content[0].image_url.detail"),
    (body(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x", "size": 1}}]}]),
     "messages[0].content[0].image_url.size"),
    (body(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}, "x": 1}]}]),
     "messages[0].content[0].x"),
    (body(messages=[{"role": "system", "content": [{"type": "text", "text": "a"},
                                                   {"type": "image_url", "image_url": {"url": "x"}}]}, USER]),
     "messages[0].content[1]"),
    (body(messages=[{"role": "user", "content": [{"type": "text"}]}]), "messages[0].content[0].text"),
    (body(messages=[{"role": "user", "content": [{"type": "text", "text": 1}]}]),
     "messages[0].content[0].text"),
    (body(messages=[{"role": "user", "content": [{"type": "input_audio"}]}]), "messages[0].content[0].type"),
    (body(messages=[USER, {"role": "user", "content": [{"type": "text", "text": "a"}, 3]}]),
     "messages[1].content[1]"),
    # Sampling parameters: JSON types exactly, within OpenAI's ranges.
    (body(temperature="0.5"), "temperature"),
    (body(temperature=True), "temperature"),
    (body(temperature=-0.1), "temperature"),
    (body(temperature=2.01), "temperature"),
    (body(top_p=1.5), "top_p"),
    (body(top_p=-1), "top_p"),
    (body(presence_penalty=2.5), "presence_penalty"),
    (body(frequency_penalty=-2.5), "frequency_penalty"),
    (body(frequency_penalty="0"), "frequency_penalty"),
    (body(seed=1.5), "seed"),
    (body(seed=2**63), "seed"),
    (body(seed=-2**63 - 1), "seed"),
    (body(n=0), "n"),
    (body(n=1.0), "n"),
    (body(n=True), "n"),
    (body(max_tokens=0), "max_tokens"),
    (body(max_tokens="16"), "max_tokens"),
    (body(max_tokens=1.5), "max_tokens"),
    (body(max_completion_tokens=0), "max_completion_tokens"),
    (body(stream="true"), "stream"),
    (body(stream=1), "stream"),
    (body(user=5), "user"),
    # Stop sequences.
    (body(stop=5), "stop"),
    (body(stop=["a", 1]), "stop"),
    (body(stop=["a", "b", "c", "d", "e"]), "stop"),
    (body(stop={"a": 1}), "stop"),
    # stream_options.
    (body(stream_options={"include_usage": True}), "stream_options"),
    (body(stream=False, stream_options={"include_usage": True}), "stream_options"),
    (body(stream=True, stream_options={"include_usage": 1}), "stream_options.include_usage"),
    (body(stream=True, stream_options={"include_obfuscation": True}), "stream_options.include_obfuscation"),
    (body(stream=True, stream_options=[]), "stream_options"),
    # Features LlamaGate does not have yet are refused, never silently ignored.
    (body(logprobs=True), "logprobs"),
    (body(logprobs="yes"), "logprobs"),
    (body(logit_bias={"50256": -100}), "logit_bias"),
    # response_format, tools and tool_choice.
    (body(response_format={"type": "xml"}), "response_format.type"),
    (body(response_format={}), "response_format.type"),
    (body(response_format="text"), "response_format"),
    (body(response_format={"type": "json_schema"}), "response_format.json_schema"),
    (body(response_format={"type": "json_schema", "json_schema": {"schema": {}}}),
     "response_format.json_schema.name"),
    (body(response_format={"type": "json_schema", "json_schema": {"name": "x", "strict": "yes"}}),
     "response_format.json_schema.strict"),
    (body(tools=[{"type": "retrieval"}]), "tools[0].type"),
    (body(tools=[{"type": "function", "function": {"name": "get weather"}}]), "tools[0].function.name"),
    (body(tools=[{"type": "function", "function": {"name": "f", "parameters": []}}]),
     "tools[0].function.parameters"),
    (body(tools=[{"type": "function", "function": {"name": "f", "parameters": {"type": "string"}}}]),
     "tools[0].function.parameters"),
    (body(tools=[TOOL, TOOL]), "tools"),
    (body(tool_choice="auto"), "tool_choice"),
    (body(tools=[TOOL], tool_choice="sometimes"), "tool_choice"),
    (body(tools=[TOOL], tool_choice={"type": "function", "function": {"name": "g"}}), "tool_choice"),
    (body(tools=[TOOL], tool_choice={"type": "function"}), "tool_choice"),
    (body(tools=[TOOL], parallel_tool_calls="no"), "parallel_tool_calls"),
    (body(messages=[{"role": "user", "content": "x", "tool_calls": []}]), "messages[0].tool_calls"),
    (body(messages=[{"role": "assistant", "content": None, "tool_calls": [{"id": "c", "type": "function",
                                                                           "function": {"name": "f"}}]}]),
     "messages[0].tool_calls[0].function.arguments"),
    # Unknown fields name themselves.
    (body(temprature=0.5), "temprature"),
    (body(messages=[{"role": "user", "content": "x", "mood": "happy"}]), "messages[0].mood"),
])
def test_invalid_body_is_refused_naming_the_field(payload, param):
    error = rejection(payload)
    assert error.status == 400
    assert error.type == "invalid_request_error"
    assert error.param == param
    assert error.to_dict()["error"]["param"] == param


def test_tools_and_formats_map_to_the_request():
    request = parse_chat_completion(body(
        tools=[TOOL], tool_choice={"type": "function", "function": {"name": "get_weather"}},
        parallel_tool_calls=False,
        response_format={"type": "json_schema", "json_schema": {"name": "w", "schema": {"type": "object"},
                                                                "strict": True}}))
    assert request.tools == (TOOL,)
    assert request.tool_choice == ToolChoice("function", "get_weather")
    assert request.parallel_tool_calls is False
    assert request.response_format == ResponseFormat("json_schema", {"type": "object"}, strict=True, name="w")


def test_tool_choice_defaults_to_auto_with_tools_and_none_without():
    assert parse_chat_completion(body(tools=[TOOL])).effective_tool_choice == ToolChoice("auto")
    assert parse_chat_completion(body()).effective_tool_choice == ToolChoice("none")
    assert parse_chat_completion(body(tool_choice="none")).effective_tool_choice == ToolChoice("none")


@pytest.mark.parametrize("name", NOT_YET_SUPPORTED)
def test_not_yet_supported_parameter_is_refused_by_name(name):
    error = rejection(body(**{name: [{"type": "function", "function": {"name": "f"}}]}))
    assert error.status == 400
    assert error.param == name
    assert f"'{name}' is not supported" in error.message


@pytest.mark.parametrize("name", NOT_YET_SUPPORTED)
def test_not_yet_supported_parameter_given_as_null_is_accepted(name):
    assert parse_chat_completion(body(**{name: None})).model == "smollm2-135m-instruct"


@pytest.mark.parametrize("name", IGNORED)
def test_ignored_parameter_is_accepted(name):
    request = parse_chat_completion(body(**{name: {"k": "v"} if name == "metadata" else True}))
    assert request.messages == [USER]


@pytest.mark.parametrize("payload", [None, [], "model", 3, [body()]])
def test_body_that_is_not_an_object_is_refused_without_param(payload):
    error = rejection(payload)
    assert error.status == 400
    assert error.param is None
    assert "expected a JSON object" in error.message


def test_unknown_field_message_is_openais():
    assert rejection(body(foo=1)).message == "Unrecognized request argument supplied: foo"


def test_missing_field_message_names_it():
    assert rejection({"messages": [USER]}).message == "Missing required parameter: 'model'."


def test_range_error_message_names_the_field():
    message = rejection(body(temperature=3)).message
    assert message.startswith("Invalid 'temperature': ")


def test_role_error_lists_supported_roles():
    message = rejection(body(messages=[{"role": "bot", "content": "x"}])).message
    assert "'bot'" in message
    for role in ("system", "developer", "user", "assistant", "tool"):
        assert repr(role) in message


def test_image_outside_a_user_message_is_refused_saying_where_images_go():
    payload = body(messages=[{"role": "assistant", "content": [{"type": "image_url", "image_url": {"url": "x"}}]},
                             USER])
    assert "only allowed in user messages" in rejection(payload).message


def test_image_parts_are_accepted_with_text_in_any_order_and_number():
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA", "detail": "low"}}
    content = [image, {"type": "text", "text": "Which is larger?"}, image, dict(image, image_url={"url": "https://x"})]
    request = parse_chat_completion(body(messages=[{"role": "user", "content": content}, USER,
                                                   {"role": "user", "content": [image]}]))
    assert request.messages[0]["content"] == content
    assert request.messages[2]["content"] == [image]


# --- accepted bodies and the request they become -----------------------------------------------

def test_minimal_body_gets_defaults():
    request = parse_chat_completion(body())
    assert request == ChatCompletionRequest(model="smollm2-135m-instruct", messages=[USER])
    assert (request.temperature, request.top_p, request.n) == (1.0, 1.0, 1)
    assert request.max_tokens is None and request.seed is None and request.user is None
    assert request.stop == () and request.stream is False and request.include_usage is False
    assert (request.presence_penalty, request.frequency_penalty) == (0.0, 0.0)


def test_nulls_mean_defaults():
    request = parse_chat_completion(body(temperature=None, top_p=None, n=None, stream=None, stop=None,
                                         max_tokens=None, presence_penalty=None, frequency_penalty=None,
                                         seed=None, stream_options=None, logprobs=None, logit_bias=None,
                                         response_format=None, user=None))
    assert request == ChatCompletionRequest(model="smollm2-135m-instruct", messages=[USER])


def test_every_field_maps_to_the_request():
    request = parse_chat_completion(body(
        temperature=0.7, top_p=0.9, max_tokens=64, stream=True, stream_options={"include_usage": True},
        stop=["\n\n", "END"], seed=-3, presence_penalty=0.5, frequency_penalty=-1.5, n=3, user="u-1"))
    assert request == ChatCompletionRequest(
        model="smollm2-135m-instruct", messages=[USER], temperature=0.7, top_p=0.9, max_tokens=64,
        stream=True, include_usage=True, stop=("\n\n", "END"), seed=-3, presence_penalty=0.5,
        frequency_penalty=-1.5, n=3, user="u-1")


def test_integer_numbers_become_floats():
    request = parse_chat_completion(body(temperature=0, top_p=1, presence_penalty=2))
    assert isinstance(request.temperature, float) and request.temperature == 0.0
    assert isinstance(request.top_p, float) and isinstance(request.presence_penalty, float)


@pytest.mark.parametrize("fields, expected", [
    ({"max_tokens": 10}, 10),
    ({"max_completion_tokens": 20}, 20),
    ({"max_tokens": 10, "max_completion_tokens": 20}, 20),
    ({"max_tokens": 30, "max_completion_tokens": 20}, 20),
    ({"max_tokens": 10, "max_completion_tokens": None}, 10),
    ({}, None),
])
def test_max_completion_tokens_wins_over_max_tokens(fields, expected):
    assert parse_chat_completion(body(**fields)).max_tokens == expected


@pytest.mark.parametrize("stop, expected", [
    ("END", ("END",)),
    (["a", "b"], ("a", "b")),
    ([], ()),
    (["1", "2", "3", "4"], ("1", "2", "3", "4")),
])
def test_stop_becomes_a_tuple(stop, expected):
    assert parse_chat_completion(body(stop=stop)).stop == expected


@pytest.mark.parametrize("stream_options, include_usage", [
    ({"include_usage": True}, True),
    ({"include_usage": False}, False),
    ({}, False),
    (None, False),
])
def test_include_usage_comes_from_stream_options(stream_options, include_usage):
    request = parse_chat_completion(body(stream=True, stream_options=stream_options))
    assert request.stream is True
    assert request.include_usage is include_usage


@pytest.mark.parametrize("message", [
    {"role": "developer", "content": "Be terse."},
    {"role": "system", "content": "Be terse."},
    {"role": "assistant", "content": None},
    {"role": "assistant", "content": "Hi", "refusal": None},
    {"role": "tool", "content": "42", "tool_call_id": "call_1"},
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{\"a\": 1}"}}]},
    {"role": "assistant", "tool_calls": [  # as the SDK's model_dump(exclude_none=True) sends it back
        {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
    {"role": "user", "content": "Hi", "name": "ada"},
    {"role": "user", "content": ""},
    {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
    {"role": "user", "content": []},
])
def test_valid_message_is_kept_as_given(message):
    request = parse_chat_completion(body(messages=[message]))
    assert request.messages == [message]


@pytest.mark.parametrize("fields", [
    {"logprobs": False},
    {"logit_bias": {}},
    {"response_format": {"type": "text"}},
    {"seed": 2**63 - 1},
    {"seed": -2**63},
    {"temperature": 2},
    {"top_p": 0},
    {"presence_penalty": -2, "frequency_penalty": 2},
])
def test_boundary_values_are_accepted(fields):
    parse_chat_completion(body(**fields))
