"""The admission rules of a chat completion that need no services: the completion budget, and the
prompt's token count with images."""

from __future__ import annotations

import dataclasses

import pytest

from api.chat_completions import count_prompt_tokens, resolve_max_tokens
from api.image_input import RequestImage
from shared.chat_tokenizer import ChatTokenizer
from shared.errors import ContextLengthExceededError, InvalidRequestError
from shared.image_tokens import image_token_rule


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


class VisionRuntime:
    """What count_prompt_tokens needs of a Runtime, for the tiny LLaVA."""

    def __init__(self, directory):
        self._tokenizer = ChatTokenizer.from_directory(directory)
        self._rule = image_token_rule(directory)

    def tokenizer(self, spec):
        return self._tokenizer

    def image_token_rule(self, spec):
        return self._rule


def picture(width: int, height: int) -> RequestImage:
    return RequestImage(b"", "image/png", width, height, "auto", "messages[0].content[0]")


@pytest.fixture
def vision_spec(default_spec):
    return dataclasses.replace(default_spec, capabilities=frozenset({"chat", "vision"}))


def test_each_image_counts_as_its_tokens(tiny_vlm_dir, vision_spec):
    from tiny_vlm import TOKENS_PER_IMAGE

    runtime = VisionRuntime(tiny_vlm_dir)
    text_only = [{"role": "user", "content": [{"type": "text", "text": "Which is larger?"}]}]
    with_two = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Which is larger?"},
                                             {"type": "image"}]}]
    base = count_prompt_tokens(runtime, vision_spec, text_only)
    counted = count_prompt_tokens(runtime, vision_spec, with_two, (), [picture(640, 480), picture(20, 900)])
    newlines = 2  # the template writes "<image>\n" for each image
    assert counted == base + 2 * TOKENS_PER_IMAGE + newlines


def test_a_vision_models_text_is_counted_as_content_parts(tiny_vlm_dir, vision_spec):
    # The template renders only content parts; counted as plain strings, the text would vanish.
    runtime = VisionRuntime(tiny_vlm_dir)
    short = count_prompt_tokens(runtime, vision_spec, [{"role": "user", "content": "Hi"}])
    long = count_prompt_tokens(runtime, vision_spec, [{"role": "user", "content": "Hi " * 50}])
    assert long > short + 40


def test_images_the_template_does_not_place_are_refused(tiny_vlm_dir, vision_spec):
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Hi"}]}]
    with pytest.raises(InvalidRequestError) as caught:
        count_prompt_tokens(VisionRuntime(tiny_vlm_dir), vision_spec, messages, (), [picture(1, 1)] * 2)
    assert caught.value.param == "messages" and "placed 1 image" in caught.value.message


def test_an_image_the_models_encoder_cannot_take_is_refused_naming_its_part(tiny_vlm_dir, vision_spec):
    from shared.image_tokens import PatchGridImageTokens

    runtime = VisionRuntime(tiny_vlm_dir)
    runtime._rule = PatchGridImageTokens(14, 2, 3136, 12845056)  # Qwen2.5-VL's: at least 28 pixels a side
    runtime._rule.placeholder = "<image>"  # where the tiny model's template puts images
    messages = [{"role": "user", "content": [{"type": "text", "text": "Hi"}, {"type": "image"}]}]
    tiny = dataclasses.replace(picture(20, 300), param="messages[0].content[1]")
    with pytest.raises(InvalidRequestError) as caught:
        count_prompt_tokens(runtime, vision_spec, messages, (), [tiny])
    assert caught.value.param == "messages[0].content[1]" and "at least 28x28" in caught.value.message
    assert count_prompt_tokens(runtime, vision_spec, messages, (), [picture(56, 300)]) > 1
