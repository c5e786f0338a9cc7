"""OpenAI's response shapes for chat completions: the `chat.completion` object and its chunks."""

from __future__ import annotations

from typing import Any, Optional, Sequence

import orjson

SYSTEM_FINGERPRINT = "llamagate"
_UNSET: Any = object()


def completion_id(request_id: str) -> str:
    return f"chatcmpl-{request_id}"


def assistant_message(content: str, tool_calls: Sequence[dict[str, Any]] = (),
                      reasoning: Optional[str] = None) -> dict[str, Any]:
    """A choice's message; `reasoning` (a reasoning model's thinking) is set only for such models."""
    message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": None}
    if tool_calls:
        message["tool_calls"] = list(tool_calls)
        if not content.strip():
            message["content"] = None  # as OpenAI: a message of tool calls alone has no content
    if reasoning is not None:
        message["reasoning_content"] = reasoning
    return message


def chat_completion(request_id: str, created: int, model: str, texts: list[str],
                    finish_reasons: list[Optional[str]], usage: dict[str, int],
                    messages: Optional[list[dict[str, Any]]] = None) -> dict[str, Any]:
    """The whole `chat.completion`: from plain `texts`, or from `messages` already assembled."""
    if messages is None:
        messages = [assistant_message(text) for text in texts]
    return {
        "id": completion_id(request_id),
        "object": "chat.completion",
        "created": created,
        "model": model,
        "system_fingerprint": SYSTEM_FINGERPRINT,
        "choices": [
            {"index": index,
             "message": message,
             "logprobs": None,
             "finish_reason": finish_reasons[index]}
            for index, message in enumerate(messages)
        ],
        "usage": usage,
    }


class ChunkWriter:
    """Serializes the chunks of one streamed completion as SSE `data:` lines."""

    def __init__(self, request_id: str, created: int, model: str, include_usage: bool):
        self._head = {"id": completion_id(request_id), "object": "chat.completion.chunk",
                      "created": created, "model": model, "system_fingerprint": SYSTEM_FINGERPRINT}
        self._include_usage = include_usage

    def role(self, index: int) -> bytes:
        return self._chunk([{"index": index, "delta": {"role": "assistant", "content": ""},
                             "logprobs": None, "finish_reason": None}])

    def content(self, index: int, text: str) -> bytes:
        return self._chunk([{"index": index, "delta": {"content": text}, "logprobs": None,
                             "finish_reason": None}])

    def reasoning(self, index: int, text: str) -> bytes:
        return self._chunk([{"index": index, "delta": {"reasoning_content": text}, "logprobs": None,
                             "finish_reason": None}])

    def tool_call(self, index: int, call_index: int, call_id: str, name: str, arguments: str) -> bytes:
        """A whole tool call in OpenAI's streamed shape: its id and name, then its arguments."""
        head = {"index": call_index, "id": call_id, "type": "function",
                "function": {"name": name, "arguments": ""}}
        return (self._chunk([{"index": index, "delta": {"tool_calls": [head]}, "logprobs": None,
                              "finish_reason": None}])
                + self._chunk([{"index": index, "delta": {"tool_calls": [
                    {"index": call_index, "function": {"arguments": arguments}}]},
                    "logprobs": None, "finish_reason": None}]))

    def finish(self, index: int, reason: str) -> bytes:
        return self._chunk([{"index": index, "delta": {}, "logprobs": None, "finish_reason": reason}])

    def usage(self, usage: dict[str, int]) -> bytes:
        """The extra last chunk of `stream_options.include_usage`: no choices, only usage."""
        return self._chunk([], usage)

    def _chunk(self, choices: list[dict[str, Any]], usage: Any = _UNSET) -> bytes:
        chunk = dict(self._head, choices=choices)
        if self._include_usage:
            # With include_usage, OpenAI sends "usage": null on every chunk but the last.
            chunk["usage"] = None if usage is _UNSET else usage
        return sse_data(chunk)


def sse_data(payload: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


SSE_DONE = b"data: [DONE]\n\n"
SSE_KEEPALIVE = b": keep-alive\n\n"
