"""The admission rules of a chat completion that need no services: the completion budget."""

from __future__ import annotations

import dataclasses

import pytest

from api.chat_completions import resolve_max_tokens
from shared.errors import ContextLengthExceededError


@pytest.fixture
def spec(default_spec):
    return dataclasses.replace(default_spec, context_length=100)


@pytest.mark.parametrize("prompt_tokens, requested, default, budget", [
    (10, None, 1024, 90),  # the default, bounded by the room left in the context
    (10, None, 16, 16),
    (10, 90, 1024, 90),  # exactly fills the context
    (10, 1, 1024, 1),
    (99, None, 1024, 1),
])
def test_budget(spec, prompt_tokens, requested, default, budget):
    assert resolve_max_tokens(spec, prompt_tokens, requested, default) == budget


@pytest.mark.parametrize("prompt_tokens, requested, wanted", [
    (10, 91, 101),
    (100, None, 101),
    (150, None, 151),
    (100, 5, 105),
])
def test_budget_beyond_the_context_is_refused(spec, prompt_tokens, requested, wanted):
    with pytest.raises(ContextLengthExceededError) as caught:
        resolve_max_tokens(spec, prompt_tokens, requested, 1024)
    error = caught.value
    assert (error.status, error.code, error.param) == (400, "context_length_exceeded", "messages")
    assert "maximum context length is 100 tokens" in error.message
    assert f"you requested {wanted} tokens" in error.message
