"""Reading a choice's text: thinking apart from the answer, tool calls out of the answer, streamed or not."""

from __future__ import annotations

import json

import pytest

from api.choice_reader import CONTENT, REASONING, TOOL_CALL, ChoiceReader
from api.output_plan import OutputPlan

TOOLS = ({"type": "function", "function": {"name": "get_weather"}},
         {"type": "function", "function": {"name": "get_time"}})
TOOL_PLAN = OutputPlan(tools=TOOLS, parse_tool_calls=True)
REASONING_PLAN = OutputPlan(reasoning=True)


def read(plan: OutputPlan, chunks: list[str]):
    """Every piece, the joined text per kind, the calls, and the finish reason for a "stop" end."""
    reader = ChoiceReader(plan)
    pieces = []
    for chunk in chunks:
        pieces += reader.feed(chunk)
    pieces += reader.finish()
    text = {kind: "".join(p.text for p in pieces if p.kind == kind) for kind in (CONTENT, REASONING)}
    calls = [(p.tool_call.name, json.loads(p.tool_call.arguments)) for p in pieces if p.kind == TOOL_CALL]
    return pieces, text, calls, reader.finish_reason("stop")


def by_characters(text: str) -> list[str]:
    return list(text)


@pytest.mark.parametrize("split", [by_characters, lambda t: [t]])
def test_hermes_tool_calls_are_parsed_and_the_text_around_them_kept(split):
    text = ('Let me check. <tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n'
            '<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call>\n')
    pieces, joined, calls, reason = read(TOOL_PLAN, split(text))
    assert calls == [("get_weather", {"city": "Paris"}), ("get_time", {})]
    assert joined[CONTENT] == "Let me check."
    assert reason == "tool_calls"
    assert all("<tool_call>" not in p.text for p in pieces)


@pytest.mark.parametrize("text, expected", [
    ('[TOOL_CALLS] [{"name": "get_weather", "arguments": {"city": "Oslo"}}]', [("get_weather", {"city": "Oslo"})]),
    ('{"name": "get_weather", "parameters": {"city": "Rome"}}', [("get_weather", {"city": "Rome"})]),
    ('[{"name": "get_time", "arguments": "{\\"zone\\": \\"UTC\\"}"}]', [("get_time", {"zone": "UTC"})]),
])
def test_mistral_and_llama_json_calls_are_parsed(text, expected):
    _, joined, calls, reason = read(TOOL_PLAN, by_characters(text))
    assert calls == expected and joined[CONTENT] == "" and reason == "tool_calls"


@pytest.mark.parametrize("text", [
    "The weather is fine.",
    '{"name": "not_a_tool", "arguments": {}}',
    '{"answer": 42}',
    "Compare a <tool and a <tool_cal mark.",
])
def test_text_that_is_not_a_call_to_a_given_function_stays_text(text):
    _, joined, calls, reason = read(TOOL_PLAN, by_characters(text))
    assert calls == [] and joined[CONTENT] == text and reason == "stop"


def test_a_broken_call_block_stays_text():
    text = "<tool_call>\n{not json}\n</tool_call>"
    _, joined, calls, _ = read(TOOL_PLAN, by_characters(text))
    assert calls == [] and joined[CONTENT] == text


def test_an_unclosed_call_cut_after_its_json_still_counts():
    _, _, calls, _ = read(TOOL_PLAN, ['<tool_call>\n{"name": "get_time", "arguments": {"zone": "CET"}}'])
    assert calls == [("get_time", {"zone": "CET"})]


def test_length_is_kept_as_the_finish_reason_even_with_calls():
    reader = ChoiceReader(TOOL_PLAN)
    reader.feed('<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call>')
    reader.finish()
    assert reader.finish_reason("length") == "length"


def test_call_ids_are_unique():
    pieces, *_ = read(TOOL_PLAN, ['<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call>'] * 2)
    ids = [p.tool_call.id for p in pieces if p.kind == TOOL_CALL]
    assert len(ids) == 2 and len(set(ids)) == 2 and all(i.startswith("call_") for i in ids)


@pytest.mark.parametrize("split", [by_characters, lambda t: [t], lambda t: [t[:9], t[9:15], t[15:]]])
@pytest.mark.parametrize("text", ["<think>Step one, step two.</think>\n\nThe answer.",
                                  "Step one, step two.</think>The answer."])  # template pre-filled <think>
def test_thinking_is_split_from_the_answer(split, text):
    pieces, joined, _, _ = read(REASONING_PLAN, split(text))
    assert joined[REASONING] == "Step one, step two."
    assert joined[CONTENT] == "The answer."
    assert all("think>" not in p.text for p in pieces)


def test_thinking_that_never_ends_is_all_reasoning():
    _, joined, _, _ = read(REASONING_PLAN, by_characters("<think>Hmm, </thi"))
    assert joined == {REASONING: "Hmm, </thi", CONTENT: ""}


def test_tool_calls_after_thinking_are_parsed_and_thinking_kept_apart():
    plan = OutputPlan(tools=TOOLS, parse_tool_calls=True, reasoning=True)
    text = '<think>Need the time.</think>\n<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call>'
    _, joined, calls, reason = read(plan, by_characters(text))
    assert joined == {REASONING: "Need the time.", CONTENT: ""}
    assert calls == [("get_time", {})] and reason == "tool_calls"


def test_without_tools_or_reasoning_text_passes_through():
    _, joined, calls, reason = read(OutputPlan(), ["<think>", "x</think>", '<tool_call>{"name": "get_time"}'])
    assert joined[CONTENT] == '<think>x</think><tool_call>{"name": "get_time"}' and calls == [] and reason == "stop"


def test_a_forced_call_cut_by_max_tokens_is_dropped_not_shown_as_text():
    plan = OutputPlan(tools=TOOLS, parse_tool_calls=True, forced_tool_call=True)
    text = '<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call>\n<tool_call>\n{"name": "get_'
    _, joined, calls, _ = read(plan, by_characters(text))
    assert calls == [("get_time", {})] and joined[CONTENT] == ""


@pytest.mark.parametrize("text", ['{"name": ["get_time"], "arguments": {}}', '[{"name": {}}]', "[1, 2]"])
def test_json_that_only_looks_like_a_call_stays_text(text):
    _, joined, calls, _ = read(TOOL_PLAN, [text])
    assert calls == [] and joined[CONTENT] == text
