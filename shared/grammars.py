"""Output grammars for constrained decoding, in llguidance's grammar format.

The API builds a request's grammar (from `response_format` or a forced tool call) and checks it
before queueing; the worker compiles it against its model's tokenizer. Both sides use llguidance,
so what the API accepts is exactly what the worker can enforce.
"""

from __future__ import annotations

import json
import re
from typing import Any, Iterable

from llguidance import LLMatcher

# The shape of one tool call in LlamaGate's tool-call format (Hermes/Qwen style), for constraining.
TOOL_CALL_OPEN = "<tool_call>"
TOOL_CALL_CLOSE = "</tool_call>"

# JSON whitespace, bounded: enough for pretty-printed JSON, but a small model cannot spend its whole
# max_tokens on blank lines (unbounded whitespace is the classic failure of JSON grammars).
WHITESPACE = r"[\x20\x0A\x0D\x09]{0,24}"
_JSON_OPTIONS = {"whitespace_pattern": WHITESPACE}

_UNIMPLEMENTED = re.compile(r'Unimplemented keys: \[([^\]]*)\]')


class GrammarError(ValueError):
    """A schema or grammar the grammar engine cannot enforce; `keywords` names what it lacks."""

    def __init__(self, message: str, keywords: tuple[str, ...] = ()):
        super().__init__(message)
        self.keywords = keywords


def json_object_grammar() -> str:
    """Any JSON object."""
    return LLMatcher.grammar_from_json_schema({"type": "object"}, overrides=_JSON_OPTIONS)


def json_schema_grammar(schema: dict[str, Any], strict: bool) -> str:
    """JSON that validates against `schema`. Unless `strict`, keywords the engine lacks are ignored."""
    return _checked(_json_grammar(schema, strict))


def tool_call_grammar(functions: Iterable[dict[str, Any]], parallel: bool) -> str:
    """One tool call (or several, if `parallel`) to one of `functions`, in the Hermes format:
    `<tool_call>\n{"name": ..., "arguments": {...}}\n</tool_call>`. Each function's arguments
    follow its own parameters schema (strictly when the function says `strict: true`)."""
    alternatives = []
    for function in functions:
        parameters = function.get("parameters") or {"type": "object", "properties": {}}
        if function.get("strict"):
            _checked(_json_grammar(parameters, strict=True))  # raises naming what is unsupported
        alternatives.append({
            "type": "object",
            "properties": {"name": {"const": function["name"]}, "arguments": parameters},
            "required": ["name", "arguments"],
            "additionalProperties": False,
        })
    call_schema = {"anyOf": alternatives, "x-guidance": {"lenient": True, **_JSON_OPTIONS}}
    # A call ends right at its closing tag, where the model may end its turn; a newline would invite
    # another call (small models then repeat calls until max_tokens).
    lark = "\n".join([
        'start: call ("\\n" call)*' if parallel else "start: call",
        f"call: {json.dumps(TOOL_CALL_OPEN + chr(10))} body {json.dumps(chr(10) + TOOL_CALL_CLOSE)}",
        f"body: %json {json.dumps(call_schema)}",
    ])
    return _checked(LLMatcher.grammar_from_lark(lark))


def _json_grammar(schema: dict[str, Any], strict: bool) -> str:
    # Best effort: ignore unsupported keywords, and read an ambiguous oneOf as anyOf.
    options = {"lenient": not strict, "coerce_one_of": not strict, **_JSON_OPTIONS}
    try:
        return LLMatcher.grammar_from_json_schema(schema, overrides=options)
    except ValueError as exc:
        raise GrammarError(f"the schema is not valid JSON: {exc}") from None


def _checked(grammar: str) -> str:
    is_error, messages = LLMatcher.validate_grammar_with_warnings(grammar)
    if is_error:
        message = messages[0] if messages else "invalid grammar"
        found = _UNIMPLEMENTED.search(message)
        if found:
            keywords = tuple(k.strip().strip('"') for k in found.group(1).split(",") if k.strip())
            raise GrammarError("unsupported JSON Schema keyword(s): " + ", ".join(keywords), keywords)
        raise GrammarError(message)
    return grammar
