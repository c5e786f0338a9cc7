"""Tool calling through the official `openai` SDK with the real model: every `tool_choice` form,
streamed and not, and a full round trip with a tool result."""

from __future__ import annotations

import json

import jsonschema
import openai
import pytest

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def model_id(engine_model_id) -> str:
    """Constrained decoding is tested on both CPU engines."""
    return engine_model_id

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The current weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20}},
                   "required": ["city"], "additionalProperties": False}}}
TIME = {"type": "function", "function": {
    "name": "get_time", "description": "The current time in a time zone.",
    "parameters": {"type": "object", "properties": {"zone": {"type": "string", "enum": ["UTC", "CET", "EST"]}},
                   "required": ["zone"], "additionalProperties": False}}}
TOOLS = [WEATHER, TIME]
PARAMETERS = {tool["function"]["name"]: tool["function"]["parameters"] for tool in TOOLS}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


def assert_valid_calls(calls, names=tuple(PARAMETERS)):
    assert calls
    for call in calls:
        assert call.type == "function" and call.id.startswith("call_")
        assert call.function.name in names
        jsonschema.validate(json.loads(call.function.arguments), PARAMETERS[call.function.name])


def streamed(client, **request):
    """The streamed response, reassembled the way OpenAI's clients do: tool calls by their index."""
    calls: dict[int, dict] = {}
    content, finish, deltas = "", [], []
    for chunk in client.chat.completions.create(stream=True, **request):
        if not chunk.choices:
            continue
        choice = chunk.choices[0]
        content += choice.delta.content or ""
        for delta in choice.delta.tool_calls or ():
            deltas.append(delta)
            call = calls.setdefault(delta.index, {"id": None, "name": None, "arguments": ""})
            if delta.id:
                call["id"] = delta.id
            if delta.function and delta.function.name:
                call["name"] = delta.function.name
            if delta.function and delta.function.arguments:
                call["arguments"] += delta.function.arguments
        if choice.finish_reason:
            finish.append(choice.finish_reason)
    return content, [calls[i] for i in sorted(calls)], finish, deltas


def test_required_tool_choice_gives_a_valid_call(client, model_id):
    completion = client.chat.completions.create(model=model_id, messages=ASK, tools=TOOLS, tool_choice="required",
                                                parallel_tool_calls=False, max_tokens=80, temperature=0)
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    assert_valid_calls(choice.message.tool_calls)
    assert len(choice.message.tool_calls) == 1


def test_required_parallel_tool_calls_all_parse(client, model_id):
    # SmolLM2-135M tends to repeat calls until max_tokens; every complete call still parses, and a
    # call cut off at the end is dropped rather than shown as text.
    completion = client.chat.completions.create(model=model_id, messages=ASK, tools=TOOLS, tool_choice="required",
                                                max_tokens=60, temperature=0)
    choice = completion.choices[0]
    assert choice.finish_reason in ("tool_calls", "length")
    assert choice.message.content is None
    assert_valid_calls(choice.message.tool_calls)


def test_named_tool_choice_calls_that_function(client, model_id):
    completion = client.chat.completions.create(
        model=model_id, messages=ASK, tools=TOOLS, tool_choice={"type": "function", "function": {"name": "get_time"}},
        max_tokens=80, temperature=0)
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert [c.function.name for c in choice.message.tool_calls] == ["get_time"]
    assert_valid_calls(choice.message.tool_calls, names=("get_time",))


def test_streamed_tool_call_arrives_in_openais_delta_shape(client, model_id):
    request = dict(model=model_id, messages=ASK, tools=TOOLS, tool_choice="required", max_tokens=80,
                   temperature=0, parallel_tool_calls=False)
    content, calls, finish, deltas = streamed(client, **request)
    assert finish == ["tool_calls"] and content == ""
    # First the call's index, id, type and name; then its arguments.
    assert deltas[0].id and deltas[0].type == "function" and deltas[0].function.name
    assert len(calls) == 1 and calls[0]["id"].startswith("call_")
    assert calls[0]["name"] in PARAMETERS
    jsonschema.validate(json.loads(calls[0]["arguments"]), PARAMETERS[calls[0]["name"]])
    whole = client.chat.completions.create(**request).choices[0].message.tool_calls[0]
    assert (whole.function.name, json.loads(whole.function.arguments)) == (calls[0]["name"],
                                                                           json.loads(calls[0]["arguments"]))


@pytest.mark.parametrize("stream", [False, True])
def test_auto_tool_choice_gives_either_parsed_calls_or_text(client, model_id, stream):
    request = dict(model=model_id, messages=ASK, tools=TOOLS, max_tokens=60, temperature=0)
    if stream:
        content, calls, finish, _ = streamed(client, **request)
    else:
        choice = client.chat.completions.create(**request).choices[0]
        content, calls, finish = choice.message.content, choice.message.tool_calls or [], [choice.finish_reason]
    if calls:
        assert finish == ["tool_calls"]
    else:
        assert finish[0] in ("stop", "length") and content and "<tool_call>" not in content


def test_tool_choice_none_returns_text(client, model_id):
    choice = client.chat.completions.create(model=model_id, messages=ASK, tools=TOOLS, tool_choice="none",
                                            max_tokens=20, temperature=0).choices[0]
    assert choice.message.tool_calls is None and choice.message.content
    assert choice.finish_reason in ("stop", "length")


def test_round_trip_with_a_tool_result(client, model_id):
    first = client.chat.completions.create(model=model_id, messages=ASK, tools=TOOLS, max_tokens=80, temperature=0,
                                           tool_choice={"type": "function", "function": {"name": "get_weather"}})
    call = first.choices[0].message.tool_calls[0]
    conversation = ASK + [
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"celsius": 18, "sky": "sunny"})},
    ]
    second = client.chat.completions.create(model=model_id, messages=conversation, tools=TOOLS, tool_choice="none",
                                            max_tokens=30, temperature=0)
    assert second.choices[0].message.content
    assert second.choices[0].finish_reason in ("stop", "length")
    # The call and its result were rendered into the prompt.
    without = client.chat.completions.create(model=model_id, messages=ASK, tools=TOOLS, tool_choice="none",
                                             max_tokens=1)
    assert second.usage.prompt_tokens > without.usage.prompt_tokens + 20


def test_model_without_tools_capability_is_a_400(client):
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="llamagate-benchmark", messages=ASK, tools=TOOLS)
    assert caught.value.body["param"] == "tools"
    assert "does not support tool calling" in caught.value.body["message"]


def test_tool_choice_naming_an_unknown_function_is_a_400(client, model_id):
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=model_id, messages=ASK, tools=TOOLS,
                                       tool_choice={"type": "function", "function": {"name": "launch"}})
    assert caught.value.body["param"] == "tool_choice"
