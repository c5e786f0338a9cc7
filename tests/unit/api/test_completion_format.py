"""The `chat.completion` object and its streamed chunks, in exactly OpenAI's shapes."""

from __future__ import annotations

import json

import pytest

from api.completion_format import (SSE_DONE, SSE_KEEPALIVE, ChunkWriter, assistant_message, chat_completion,
                                   completion_id,
                                   sse_data)

USAGE = {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17}
CHUNK_KEYS = {"id", "object", "created", "model", "system_fingerprint", "choices"}


def decode_sse(data: bytes) -> dict:
    """The JSON payload of one SSE `data:` event."""
    assert data.startswith(b"data: ") and data.endswith(b"\n\n")
    assert data.count(b"\n\n") == 1, "one event per chunk"
    return json.loads(data[len(b"data: "):-2])


def test_completion_id_is_prefixed_request_id():
    assert completion_id("abc123") == "chatcmpl-abc123"


def test_chat_completion_has_openais_shape():
    body = chat_completion("r1", 1700000000, "smollm2-135m-instruct", ["Hello!", "Hi"], ["stop", "length"],
                           USAGE)
    assert body == {
        "id": "chatcmpl-r1",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "smollm2-135m-instruct",
        "system_fingerprint": "llamagate",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "Hello!", "refusal": None},
             "logprobs": None, "finish_reason": "stop"},
            {"index": 1, "message": {"role": "assistant", "content": "Hi", "refusal": None},
             "logprobs": None, "finish_reason": "length"},
        ],
        "usage": USAGE,
    }


@pytest.fixture
def writer() -> ChunkWriter:
    return ChunkWriter("r1", 1700000000, "smollm2-135m-instruct", include_usage=False)


@pytest.fixture
def usage_writer() -> ChunkWriter:
    return ChunkWriter("r1", 1700000000, "smollm2-135m-instruct", include_usage=True)


def test_role_chunk(writer):
    chunk = decode_sse(writer.role(0))
    assert chunk == {"id": "chatcmpl-r1", "object": "chat.completion.chunk", "created": 1700000000,
                     "model": "smollm2-135m-instruct", "system_fingerprint": "llamagate",
                     "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                  "logprobs": None, "finish_reason": None}]}


def test_content_chunk(writer):
    chunk = decode_sse(writer.content(2, "Hel"))
    assert chunk["choices"] == [{"index": 2, "delta": {"content": "Hel"}, "logprobs": None,
                                 "finish_reason": None}]


def test_finish_chunk_has_empty_delta(writer):
    chunk = decode_sse(writer.finish(1, "length"))
    assert chunk["choices"] == [{"index": 1, "delta": {}, "logprobs": None, "finish_reason": "length"}]


def test_chunks_share_the_completions_head(writer):
    chunks = [decode_sse(c) for c in (writer.role(0), writer.content(0, "x"), writer.finish(0, "stop"))]
    for chunk in chunks:
        assert set(chunk) == CHUNK_KEYS
        assert (chunk["id"], chunk["object"], chunk["created"], chunk["model"]) == (
            "chatcmpl-r1", "chat.completion.chunk", 1700000000, "smollm2-135m-instruct")


def test_without_include_usage_no_chunk_has_a_usage_key(writer):
    for data in (writer.role(0), writer.content(0, "x"), writer.finish(0, "stop")):
        assert "usage" not in decode_sse(data)


def test_with_include_usage_every_chunk_but_the_last_has_null_usage(usage_writer):
    for data in (usage_writer.role(0), usage_writer.content(0, "x"), usage_writer.finish(0, "stop")):
        chunk = decode_sse(data)
        assert "usage" in chunk and chunk["usage"] is None


def test_usage_chunk_has_no_choices_and_the_usage(usage_writer):
    chunk = decode_sse(usage_writer.usage(USAGE))
    assert chunk["choices"] == []
    assert chunk["usage"] == USAGE
    assert chunk["id"] == "chatcmpl-r1" and chunk["object"] == "chat.completion.chunk"


def test_non_ascii_text_survives_as_utf8(writer):
    data = writer.content(0, "café 👋")
    assert "café 👋".encode() in data
    assert decode_sse(data)["choices"][0]["delta"]["content"] == "café 👋"


def test_text_with_newlines_stays_one_sse_event(writer):
    data = writer.content(0, "line one\n\nline two")
    assert decode_sse(data)["choices"][0]["delta"]["content"] == "line one\n\nline two"


def test_sse_data_of_an_error_body():
    error = {"error": {"message": "boom", "type": "server_error", "param": None, "code": None}}
    assert decode_sse(sse_data(error)) == error


def test_stream_terminators():
    assert SSE_DONE == b"data: [DONE]\n\n"
    # A keep-alive is an SSE comment: clients ignore lines starting with a colon.
    assert SSE_KEEPALIVE.startswith(b":") and SSE_KEEPALIVE.endswith(b"\n\n")


def test_message_with_tool_calls_has_null_content_and_the_calls():
    call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    assert assistant_message("", [call]) == {"role": "assistant", "content": None, "refusal": None,
                                             "tool_calls": [call]}
    assert assistant_message("Hi", reasoning="hmm") == {"role": "assistant", "content": "Hi", "refusal": None,
                                                        "reasoning_content": "hmm"}


def test_streamed_tool_call_sends_id_and_name_then_arguments():
    writer = ChunkWriter("r1", 1700000000, "m", include_usage=False)
    data = writer.tool_call(0, 1, "call_9", "get_time", '{"zone": "UTC"}')
    first, second = [json.loads(part[len(b"data: "):]) for part in data.split(b"\n\n") if part]
    assert first["choices"][0]["delta"] == {"tool_calls": [
        {"index": 1, "id": "call_9", "type": "function", "function": {"name": "get_time", "arguments": ""}}]}
    assert second["choices"][0]["delta"] == {"tool_calls": [
        {"index": 1, "function": {"arguments": '{"zone": "UTC"}'}}]}


def test_streamed_reasoning_uses_reasoning_content():
    chunk = decode_sse(ChunkWriter("r1", 1, "m", include_usage=False).reasoning(0, "hmm"))
    assert chunk["choices"][0]["delta"] == {"reasoning_content": "hmm"}
