"""Reading one choice's generated text as it streams in: the thinking of a reasoning model apart
from its answer, and tool calls out of the answer.

Engine-independent: it works on the text deltas any worker sends. Each `feed` returns the pieces
that are certain so far; text that may still turn into a marker (`</think>`, `<tool_call>`) is
held back until it is decided, so a stream never shows a marker or half a tool call.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from typing import Any, Iterable, Optional

from api.output_plan import THINK_CLOSE, THINK_OPEN, OutputPlan
from shared.grammars import TOOL_CALL_CLOSE, TOOL_CALL_OPEN

MISTRAL_TOOL_CALLS = "[TOOL_CALLS]"

REASONING = "reasoning"
CONTENT = "content"
TOOL_CALL = "tool_call"


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # a JSON string, as OpenAI sends it

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}


@dataclass(frozen=True)
class Piece:
    kind: str  # REASONING, CONTENT or TOOL_CALL
    text: str = ""
    tool_call: Optional[ToolCall] = None


def new_tool_call_id() -> str:
    return "call_" + secrets.token_hex(12)


def _held_prefix(buffer: str, marker: str) -> int:
    """Length of the longest suffix of `buffer` that is a proper prefix of `marker`."""
    for length in range(min(len(marker) - 1, len(buffer)), 0, -1):
        if buffer.endswith(marker[:length]):
            return length
    return 0


class ReasoningSplitter:
    """Thinking until `</think>` (a leading `<think>` is dropped, as templates may pre-fill it), then the answer."""

    def __init__(self) -> None:
        self._thinking = True
        self._opening_checked = False
        self._buffer = ""
        self._answer_started = False

    def feed(self, text: str) -> list[tuple[str, str]]:
        if not self._thinking:
            return self._answer(text)
        self._buffer += text
        if not self._opening_checked:
            stripped = self._buffer.lstrip()
            if len(stripped) < len(THINK_OPEN) and THINK_OPEN.startswith(stripped):
                return []  # may still become the opening marker
            self._opening_checked = True
            if stripped.startswith(THINK_OPEN):
                self._buffer = stripped[len(THINK_OPEN):]
        end = self._buffer.find(THINK_CLOSE)
        if end != -1:
            thinking, rest = self._buffer[:end], self._buffer[end + len(THINK_CLOSE):]
            self._buffer, self._thinking = "", False
            return ([(REASONING, thinking)] if thinking else []) + self._answer(rest)
        keep = _held_prefix(self._buffer, THINK_CLOSE)
        out, self._buffer = self._buffer[:len(self._buffer) - keep], self._buffer[len(self._buffer) - keep:]
        return [(REASONING, out)] if out else []

    def finish(self) -> list[tuple[str, str]]:
        held, self._buffer = self._buffer, ""
        return [(REASONING, held)] if held and self._thinking else []

    def _answer(self, text: str) -> list[tuple[str, str]]:
        if not self._answer_started:
            text = text.lstrip()  # the blank line models put after the marker
            self._answer_started = bool(text)
        return [(CONTENT, text)] if text else []


class ToolCallReader:
    """Tool calls out of answer text: Hermes/Qwen `<tool_call>{json}</tool_call>` blocks anywhere,
    or, as the whole answer, Mistral's `[TOOL_CALLS] [...]` or a Llama 3 style JSON call. Only
    calls to the request's functions count; anything else stays text."""

    def __init__(self, function_names: Iterable[str], forced: bool = False):
        self._names = frozenset(function_names)
        self._forced = forced  # the output was constrained to calls: a cut-off call is no text
        self._buffer = ""
        self._in_call = False
        self._whole = None  # None: undecided; True: buffering the whole answer as a possible call

    def feed(self, text: str) -> list[Piece]:
        self._buffer += text
        if self._whole is None:
            start = self._buffer.lstrip()
            if not start:
                return []
            # A JSON call or Mistral's `[TOOL_CALLS]` can only be told from text once complete.
            self._whole = start.startswith(("{", "["))
        if self._whole:
            return []
        return self._scan()

    def finish(self) -> list[Piece]:
        if self._whole:
            calls = self._parse_whole(self._buffer.strip())
            if calls:
                self._buffer = ""
                return [self._call_piece(name, arguments) for name, arguments in calls]
            text, self._buffer = self._buffer, ""
            return [self._text_piece(text)] if text else []
        pieces = self._scan()
        rest, self._buffer = self._buffer, ""
        if self._in_call:  # a block that never closed (cut by max_tokens, or a sloppy model)
            call = self._parse_call(rest[len(TOOL_CALL_OPEN):].strip())
            if call is not None:
                return pieces + [self._call_piece(*call)]
            if self._forced:
                return pieces
        if rest.strip():
            pieces.append(self._text_piece(rest))
        return pieces

    def _scan(self) -> list[Piece]:
        pieces: list[Piece] = []
        while True:
            if self._in_call:
                end = self._buffer.find(TOOL_CALL_CLOSE)
                if end == -1:
                    return pieces
                block = self._buffer[:end + len(TOOL_CALL_CLOSE)]
                self._buffer = self._buffer[end + len(TOOL_CALL_CLOSE):].lstrip()
                self._in_call = False
                call = self._parse_call(block[len(TOOL_CALL_OPEN):-len(TOOL_CALL_CLOSE)].strip())
                pieces.append(self._call_piece(*call) if call else self._text_piece(block))
                continue
            start = self._buffer.find(TOOL_CALL_OPEN)
            if start != -1:
                before = self._buffer[:start].rstrip()  # the gap before a call is not content
                if before:
                    pieces.append(self._text_piece(before))
                self._buffer = self._buffer[start:]
                self._in_call = True
                continue
            keep = _held_prefix(self._buffer, TOOL_CALL_OPEN)
            # Whitespace alone is held (and dropped at the end): around calls it is only a gap.
            text = self._buffer[:len(self._buffer) - keep]
            if text.strip():
                pieces.append(self._text_piece(text))
                self._buffer = self._buffer[len(text):]
            return pieces

    @staticmethod
    def _text_piece(text: str) -> Piece:
        return Piece(CONTENT, text)

    @staticmethod
    def _call_piece(name: str, arguments: Any) -> Piece:
        encoded = json.dumps(arguments, ensure_ascii=False)
        return Piece(TOOL_CALL, tool_call=ToolCall(new_tool_call_id(), name, encoded))

    def _parse_call(self, text: str) -> Optional[tuple[str, Any]]:
        try:
            value = json.loads(text)
        except ValueError:
            return None
        return self._as_call(value)

    def _as_call(self, value: Any) -> Optional[tuple[str, Any]]:
        if not isinstance(value, dict) or not isinstance(value.get("name"), str) or value["name"] not in self._names:
            return None
        arguments = value.get("arguments", value.get("parameters", {}))
        if isinstance(arguments, str):  # some models write the arguments as a JSON string
            try:
                arguments = json.loads(arguments)
            except ValueError:
                return None
        return (value["name"], arguments) if isinstance(arguments, dict) else None

    def _parse_whole(self, text: str) -> list[tuple[str, Any]]:
        if text.startswith(MISTRAL_TOOL_CALLS):
            text = text[len(MISTRAL_TOOL_CALLS):].strip()
        try:
            value = json.loads(text)
        except ValueError:
            return []
        values = value if isinstance(value, list) else [value]
        calls = [self._as_call(v) for v in values]
        return calls if calls and all(calls) else []


@dataclass
class ChoiceReader:
    """One choice's text in, its pieces out: reasoning, content and tool calls, as the plan says."""

    plan: OutputPlan
    reasoning: Optional[ReasoningSplitter] = None
    tools: Optional[ToolCallReader] = None
    tool_calls: list[ToolCall] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.plan.reasoning:
            self.reasoning = ReasoningSplitter()
        if self.plan.parse_tool_calls:
            self.tools = ToolCallReader((tool["function"]["name"] for tool in self.plan.tools),
                                        forced=self.plan.forced_tool_call)

    def feed(self, text: str) -> list[Piece]:
        parts = self.reasoning.feed(text) if self.reasoning else [(CONTENT, text)]
        return self._answer(parts)

    def finish(self) -> list[Piece]:
        pieces = self._answer(self.reasoning.finish()) if self.reasoning else []
        if self.tools:
            pieces += self._record(self.tools.finish())
        return pieces

    def finish_reason(self, reason: Optional[str]) -> Optional[str]:
        """The worker's finish reason, made "tool_calls" when the choice ended in tool calls."""
        return "tool_calls" if reason == "stop" and self.tool_calls else reason

    def _answer(self, parts: list[tuple[str, str]]) -> list[Piece]:
        pieces: list[Piece] = []
        for kind, text in parts:
            if kind == REASONING:
                pieces.append(Piece(REASONING, text))
            elif self.tools:
                pieces += self._record(self.tools.feed(text))
            elif text:
                pieces.append(Piece(CONTENT, text))
        return pieces

    def _record(self, pieces: list[Piece]) -> list[Piece]:
        self.tool_calls += [p.tool_call for p in pieces if p.kind == TOOL_CALL]
        return pieces
