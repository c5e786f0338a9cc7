"""The output plan: which grammar a request gets, which tools reach the prompt, and what is refused."""

from __future__ import annotations

import dataclasses

import pytest
from llguidance import LLMatcher

from api.output_plan import THINK_CLOSE, plan_output
from api.schemas.chat import parse_chat_completion
from shared.errors import InvalidRequestError

TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
OTHER = {"type": "function", "function": {"name": "get_time"}}
PERSON = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}


def request(**fields):
    return parse_chat_completion({"model": "m", "messages": [{"role": "user", "content": "Hi"}], **fields})


@pytest.fixture
def spec(default_spec):
    return dataclasses.replace(default_spec, capabilities=frozenset({"chat", "json", "tools"}))


def json_schema(schema, strict=True):
    return {"type": "json_schema", "json_schema": {"name": "out", "schema": schema, "strict": strict}}


def test_plain_request_has_no_grammar(spec):
    plan = plan_output(request(), spec)
    assert plan.grammar is None and plan.tools == () and not plan.parse_tool_calls and not plan.reasoning


@pytest.mark.parametrize("response_format", [{"type": "json_object"}, json_schema(PERSON)])
def test_json_formats_get_a_valid_grammar(spec, response_format):
    plan = plan_output(request(response_format=response_format), spec)
    assert plan.grammar and LLMatcher.validate_grammar(plan.grammar) == ""


def test_strict_schema_with_an_unsupported_keyword_is_a_400_naming_it(spec):
    with pytest.raises(InvalidRequestError) as caught:
        plan_output(request(response_format=json_schema({"type": "array", "uniqueItems": True})), spec)
    assert caught.value.status == 400
    assert "uniqueItems" in caught.value.message
    assert caught.value.param == "response_format.json_schema.schema"


def test_non_strict_schema_ignores_unsupported_keywords(spec):
    plan = plan_output(request(response_format=json_schema({"type": "array", "uniqueItems": True}, False)), spec)
    assert plan.grammar


def test_auto_tools_reach_the_prompt_unconstrained(spec):
    plan = plan_output(request(tools=[TOOL, OTHER]), spec)
    assert plan.grammar is None and plan.tools == (TOOL, OTHER) and plan.parse_tool_calls


def test_tool_choice_none_leaves_tools_out(spec):
    plan = plan_output(request(tools=[TOOL], tool_choice="none"), spec)
    assert plan.grammar is None and plan.tools == () and not plan.parse_tool_calls


@pytest.mark.parametrize("tool_choice, names", [
    ("required", ["get_weather", "get_time"]),
    ({"type": "function", "function": {"name": "get_time"}}, ["get_time"]),
])
def test_required_and_named_tool_choice_constrain_to_the_functions(spec, tool_choice, names):
    plan = plan_output(request(tools=[TOOL, OTHER], tool_choice=tool_choice), spec)
    assert plan.forced_tool_call and plan.parse_tool_calls and plan.tools == (TOOL, OTHER)
    for name in ("get_weather", "get_time"):
        assert (f'"const": "{name}"' in plan.grammar) == (name in names)


def test_model_without_tools_capability_is_a_400(default_spec):
    spec = dataclasses.replace(default_spec, capabilities=frozenset({"chat"}))
    with pytest.raises(InvalidRequestError) as caught:
        plan_output(request(tools=[TOOL]), spec)
    assert caught.value.param == "tools" and "does not support tool calling" in caught.value.message


def test_model_without_json_capability_is_a_400(default_spec):
    spec = dataclasses.replace(default_spec, capabilities=frozenset({"chat"}))
    with pytest.raises(InvalidRequestError) as caught:
        plan_output(request(response_format={"type": "json_object"}), spec)
    assert caught.value.param == "response_format"


def test_reasoning_model_constrains_only_the_answer(spec):
    reasoning = dataclasses.replace(spec, capabilities=spec.capabilities | {"reasoning"})
    plan = plan_output(request(response_format={"type": "json_object"}), reasoning)
    assert plan.reasoning and plan.grammar and plan.grammar_after == THINK_CLOSE
    assert plan_output(request(), reasoning).grammar_after is None
