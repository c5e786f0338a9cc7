"""Output grammars: what the grammar engine can enforce is built, what it cannot is refused by name."""

from __future__ import annotations

import pytest
from llguidance import LLMatcher

from shared.grammars import GrammarError, json_object_grammar, json_schema_grammar, tool_call_grammar

WEATHER = {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                  "required": ["city"]}}


def test_json_object_and_schema_grammars_are_valid():
    for grammar in (json_object_grammar(), json_schema_grammar({"type": "object", "properties": {
            "a": {"type": "integer", "minimum": 0}}}, strict=True)):
        assert LLMatcher.validate_grammar(grammar) == ""


@pytest.mark.parametrize("schema, keywords", [
    ({"type": "array", "uniqueItems": True}, ("uniqueItems",)),
    ({"type": "object", "not": {"required": ["a"]}}, ("not",)),
    ({"if": {"type": "string"}, "then": {"minLength": 2}}, ("if", "then")),
    ({"type": "array", "contains": {"type": "integer"}}, ("contains",)),
    ({"type": "object", "dependentRequired": {"a": ["b"]}}, ("dependentRequired",)),
])
def test_strict_schema_with_an_unsupported_keyword_is_refused_naming_it(schema, keywords):
    with pytest.raises(GrammarError) as caught:
        json_schema_grammar(schema, strict=True)
    assert caught.value.keywords == keywords
    for keyword in keywords:
        assert keyword in str(caught.value)


def test_lenient_schema_ignores_what_it_cannot_enforce():
    grammar = json_schema_grammar({"type": "array", "uniqueItems": True}, strict=False)
    assert LLMatcher.validate_grammar(grammar) == ""


def test_tool_call_grammar_names_only_the_given_functions():
    grammar = tool_call_grammar([WEATHER, {"name": "get_time"}], parallel=True)
    assert LLMatcher.validate_grammar(grammar) == ""
    assert '"const": "get_weather"' in grammar and '"const": "get_time"' in grammar


def test_strict_function_with_unsupported_parameters_is_refused():
    with pytest.raises(GrammarError):
        tool_call_grammar([{"name": "f", "strict": True, "parameters": {"type": "object", "not": {}}}],
                          parallel=False)
