"""Tools in the prompt, for chat templates that do not render them themselves.

A template that uses a `tools` variable gets the tools as they are. Any other gets this fallback:
a system message that lists the tools and asks for calls in the Hermes format, the one LlamaGate
parses (and enforces, when a tool call is required):

    <tool_call>
    {"name": "get_weather", "arguments": {"city": "Paris"}}
    </tool_call>

Earlier tool calls and tool results in the conversation are rendered in the same format, as
assistant and user turns, since such templates know no `tool` role.
"""

from __future__ import annotations

import json
from typing import Any, Sequence

from shared.grammars import TOOL_CALL_CLOSE, TOOL_CALL_OPEN

FALLBACK_TOOL_PROMPT = (
    "You can call functions to help answer. The functions, with their parameters as JSON Schema:\n"
    "<tools>\n{tools}\n</tools>\n"
    "To call functions, answer only with one block per call, each holding a JSON object with the "
    "function's name and arguments:\n"
    f"{TOOL_CALL_OPEN}\n"
    '{{"name": "<function name>", "arguments": {{<arguments as JSON>}}}}\n'
    f"{TOOL_CALL_CLOSE}\n"
    "If no function fits, answer normally."
)


def template_renders_tools(template_source: str) -> bool:
    """Whether a Jinja chat template takes a `tools` variable (the transformers convention)."""
    return "tools" in template_source


def with_fallback_tool_prompt(messages: Sequence[dict[str, Any]],
                              tools: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The conversation with the tools described in its system message and tool turns as text."""
    rendered = [_as_text_turn(message) for message in messages]
    if not tools:
        return rendered
    listing = "\n".join(json.dumps(tool, ensure_ascii=False) for tool in tools)
    instructions = FALLBACK_TOOL_PROMPT.format(tools=listing)
    if rendered and rendered[0]["role"] in ("system", "developer"):
        first = dict(rendered[0], content=f"{rendered[0]['content']}\n\n{instructions}")
        return [first] + rendered[1:]
    return [{"role": "system", "content": instructions}] + rendered


def tool_call_block(name: str, arguments: Any) -> str:
    """One call as the fallback format writes it."""
    call = {"name": name, "arguments": arguments}
    return f"{TOOL_CALL_OPEN}\n{json.dumps(call, ensure_ascii=False)}\n{TOOL_CALL_CLOSE}"


def arguments_object(arguments: Any) -> Any:
    """A tool call's arguments as an object where they are a JSON string (templates expect a mapping)."""
    if isinstance(arguments, str):
        try:
            return json.loads(arguments)
        except ValueError:
            return arguments
    return arguments


def _as_text_turn(message: dict[str, Any]) -> dict[str, Any]:
    if message["role"] == "tool":
        return {"role": "user", "content": f"<tool_response>\n{message['content']}\n</tool_response>"}
    calls = message.get("tool_calls")
    if message["role"] == "assistant" and calls:
        blocks = [tool_call_block(c["function"]["name"], arguments_object(c["function"].get("arguments")))
                  for c in calls]
        text = "\n".join(([message["content"]] if message.get("content") else []) + blocks)
        return {"role": "assistant", "content": text}
    return message
