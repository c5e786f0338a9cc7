"""What a request asks of the model's output, decided before the job is queued: the grammar the
worker must enforce, the tools to put in the prompt, and how the API reads the text that comes back.

Anything the model cannot do, or the grammar engine cannot enforce, is a 400 here: a constraint
is never silently dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from api.schemas.chat import ChatCompletionRequest
from shared.errors import InvalidRequestError
from shared.grammars import GrammarError, json_object_grammar, json_schema_grammar, tool_call_grammar
from shared.registry import ModelSpec

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"


@dataclass(frozen=True)
class OutputPlan:
    grammar: Optional[str] = None  # llguidance grammar the worker enforces on the answer
    grammar_after: Optional[str] = None  # ...starting once this text has been generated
    tools: tuple[dict[str, Any], ...] = ()  # tools rendered into the prompt
    parse_tool_calls: bool = False  # read tool calls out of the answer
    forced_tool_call: bool = False  # the answer is a tool call, by grammar
    reasoning: bool = False  # split the model's thinking from its answer


def plan_output(request: ChatCompletionRequest, spec: ModelSpec) -> OutputPlan:
    """The OutputPlan of a request for a model; raises InvalidRequestError for what cannot be served."""
    reasoning = spec.supports("reasoning")
    grammar_after = THINK_CLOSE if reasoning else None
    choice = request.effective_tool_choice
    if request.tools and not spec.supports("tools"):
        raise InvalidRequestError(f"The model `{spec.id}` does not support tool calling ('tools').", param="tools")
    response_format = request.response_format
    if response_format.type != "text" and not spec.supports("json"):
        raise InvalidRequestError(f"The model `{spec.id}` does not support structured output "
                                  f"(response_format {response_format.type!r}).", param="response_format")
    if choice.mode in ("required", "function"):
        if response_format.type != "text":
            raise InvalidRequestError("A required tool call cannot be combined with a JSON response_format.",
                                      param="response_format")
        functions = [tool["function"] for tool in request.tools
                     if choice.mode == "required" or tool["function"]["name"] == choice.name]
        try:
            grammar = tool_call_grammar(functions, parallel=request.parallel_tool_calls and choice.mode == "required")
        except GrammarError as exc:
            raise InvalidRequestError(f"A function's parameters cannot be enforced: {exc}.", param="tools") from None
        return OutputPlan(grammar, grammar_after, request.tools, parse_tool_calls=True, forced_tool_call=True,
                          reasoning=reasoning)
    tools = request.tools if choice.mode == "auto" else ()
    grammar = _response_format_grammar(request)
    return OutputPlan(grammar, grammar_after if grammar else None, tools, parse_tool_calls=bool(tools),
                      reasoning=reasoning)


def _response_format_grammar(request: ChatCompletionRequest) -> Optional[str]:
    response_format = request.response_format
    if response_format.type == "json_object":
        return json_object_grammar()
    if response_format.type == "json_schema":
        try:
            return json_schema_grammar(response_format.schema or {}, strict=response_format.strict)
        except GrammarError as exc:
            raise InvalidRequestError(
                f"Invalid schema for response_format '{response_format.name}': {exc}. With 'strict': false "
                "LlamaGate ignores the keywords it cannot enforce.", param="response_format.json_schema.schema",
            ) from None
    return None
