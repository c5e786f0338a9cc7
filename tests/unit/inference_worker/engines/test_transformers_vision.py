"""The transformers engine with a vision model (the tiny random-weight LLaVA): images reach the model,
each to its own request in a batch, and the prompt holds exactly the image tokens the API counts."""

from __future__ import annotations

import dataclasses
from collections import defaultdict

import pytest
import torch
from PIL import Image

from broker.contracts import SamplingParams
from inference_worker.engines import transformers_cpu
from inference_worker.engines.base import EngineRequest
from inference_worker.engines.sampling import ChoiceSampler
from inference_worker.engines.transformers_cpu import TransformersEngine
from inference_worker.engines.vision_checks import check_template
from inference_worker.engines.vision_prompts import VisionPrompts, can_join, concatenate_inputs
from shared.chat_tokenizer import ChatTokenizer
from shared.image_tokens import image_token_rule
from shared.images import DecodedImage
from shared.registry import ModelRegistry
from shared.settings import Settings
from tiny_vlm import TOKENS_PER_IMAGE, registry_entry

MAX_STEPS = 50


def image(color: tuple[int, int, int], size: tuple[int, int] = (64, 48)) -> DecodedImage:
    picture = Image.new("RGB", size, color)
    picture.paste((255 - color[0], 255 - color[1], 255 - color[2]), (0, 0, size[0] // 2, size[1] // 2))
    return DecodedImage(picture, "PNG")


RED, BLUE = image((220, 20, 20)), image((20, 20, 220), (30, 90))


def asking(*parts) -> tuple[dict, ...]:
    """A one-message conversation: strings are text parts, anything else an image part."""
    content = [{"type": "text", "text": p} if isinstance(p, str) else {"type": "image"} for p in parts]
    return ({"role": "user", "content": content},)


@pytest.fixture(scope="module")
def tokenizer(tiny_vlm_dir) -> ChatTokenizer:
    return ChatTokenizer.from_directory(tiny_vlm_dir)


@pytest.fixture(scope="module")
def engine(tiny_vlm_dir, tokenizer, tmp_path_factory) -> TransformersEngine:
    registry_file = tmp_path_factory.mktemp("registry") / "models.toml"
    registry_file.write_text(registry_entry("tiny-llava", tiny_vlm_dir))
    spec = ModelRegistry.load(registry_file).get("tiny-llava")
    engine = TransformersEngine(spec, Settings.from_env({}, torch_threads=1), tokenizer)
    engine.load()
    return engine


@pytest.fixture
def first_logits(monkeypatch) -> dict[int, torch.Tensor]:
    """The logits each request's first token was sampled from, by the request's seed (used as a tag)."""
    seen: dict[int, torch.Tensor] = {}

    class RecordingSampler(ChoiceSampler):
        def sample(self, logits):
            seen.setdefault(self.params.seed, logits.clone())
            return super().sample(logits)

    monkeypatch.setattr(transformers_cpu, "ChoiceSampler", RecordingSampler)
    return seen


def request(engine: TransformersEngine, tag: int, messages, images=(), max_tokens: int = 3) -> EngineRequest:
    prompt = engine.prompt(messages, (), images)
    return EngineRequest(f"r{tag}", prompt.ids, SamplingParams(temperature=0.0, max_tokens=max_tokens, seed=tag),
                         model_inputs=prompt.model_inputs)


def run(engine: TransformersEngine, *requests: EngineRequest) -> dict[str, str]:
    text: dict[str, str] = defaultdict(str)
    for added in requests:
        engine.add(added)
    for _ in range(MAX_STEPS):
        if not engine.has_work:
            return dict(text)
        for output in engine.step():
            text[output.request_id] += output.text
    raise AssertionError("the engine did not finish")


def test_the_prompt_holds_the_image_tokens_the_api_counts(engine, tokenizer, tiny_vlm_dir):
    messages = asking(RED, "Which of the two is larger?", BLUE)
    prompt = engine.prompt(messages, (), [RED, BLUE])
    image_token_id = tokenizer.token_id("<image>")
    assert prompt.ids.count(image_token_id) == 2 * TOKENS_PER_IMAGE
    # The API's count: the rendered template, placeholders expanded by the model's rule, tokenized.
    rule = image_token_rule(tiny_vlm_dir)
    rendered = tokenizer.render(messages, content_parts=True)
    counted = tokenizer.encode(rule.expand(rendered, [(64, 48, "auto"), (30, 90, "auto")]))
    assert prompt.ids == counted
    assert tuple(prompt.model_inputs["pixel_values"].shape) == (2, 3, 56, 56)


def test_the_prompt_keeps_text_and_images_in_their_order(engine, tokenizer):
    ids = engine.prompt(asking("Before", RED, "after"), (), [RED]).ids
    text = tokenizer._tokenizer.decode(ids, skip_special_tokens=False)
    assert text.index("Before") < text.index("<image>") < text.index("after")


def test_different_images_change_the_logits_and_the_same_image_does_not(engine, first_logits):
    messages = asking(RED, "What is in this picture?")
    run(engine, request(engine, 1, messages, [RED]))
    run(engine, request(engine, 2, messages, [BLUE]))
    run(engine, request(engine, 3, messages, [dataclasses.replace(RED)]))
    assert not torch.allclose(first_logits[1], first_logits[2], atol=1e-4)
    assert torch.allclose(first_logits[1], first_logits[3], atol=1e-5)


def test_in_a_batch_each_request_sees_its_own_images(engine, first_logits):
    messages_one = asking(RED, "What is in this picture?")
    messages_two = asking("Compare", BLUE, "with", RED)
    run(engine, request(engine, 10, messages_one, [RED]))
    run(engine, request(engine, 11, messages_two, [BLUE, RED]))
    run(engine, request(engine, 12, asking("Just text, please.")))
    # All three prefilled together: pixel values must land in the right rows, in the right order.
    run(engine, request(engine, 20, messages_one, [RED]), request(engine, 21, messages_two, [BLUE, RED]),
        request(engine, 22, asking("Just text, please.")))
    for solo, batched in ((10, 20), (11, 21), (12, 22)):
        assert torch.allclose(first_logits[solo], first_logits[batched], atol=1e-4), (solo, batched)


def test_a_conversation_without_images_needs_no_processor(engine, tokenizer):
    messages = ({"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"})
    prompt = engine.prompt(messages, (), [])
    assert prompt.ids == tokenizer.prompt_ids(messages, content_parts=True) and not prompt.model_inputs
    # The template takes only content parts: plain strings are handed over as text parts.
    text = tokenizer._tokenizer.decode(prompt.ids, skip_special_tokens=False)
    assert "Be brief." in text and "Hello" in text
    assert run(engine, request(engine, 30, messages)).keys() == {"r30"}


def test_text_beside_images_in_other_messages_reaches_the_prompt(engine, tokenizer):
    messages = ({"role": "system", "content": "You describe images."},
                {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is it?"}]},
                {"role": "assistant", "content": "A square."}, {"role": "user", "content": "Sure?"})
    text = tokenizer._tokenizer.decode(engine.prompt(messages, (), [RED]).ids, skip_special_tokens=False)
    for words in ("You describe images.", "What is it?", "A square.", "Sure?"):
        assert words in text


def test_a_template_that_cannot_place_images_is_refused_at_load(engine, tiny_vlm_dir, tmp_path):
    import shutil

    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny_vlm_dir / name, tmp_path / name)
    (tmp_path / "chat_template.jinja").write_text(  # a text model's template: content as a string
        "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}")
    with pytest.raises(RuntimeError, match="does not place an image"):
        check_template(ChatTokenizer.from_directory(tmp_path), engine.vision.rule)


def test_a_prompt_placing_fewer_images_than_given_is_refused(engine):
    with pytest.raises(ValueError, match="placed 1 image"):
        engine.prompt(asking(RED, "two?"), (), [RED, BLUE])


def test_the_processor_must_agree_with_the_rule_at_load(engine, tokenizer, tiny_vlm_dir):
    class MiscountingRule(type(engine.vision.rule)):
        def image_text(self, width, height, detail="auto"):
            return self.placeholder * (self.tokens_per_image + 1)

    prompts = VisionPrompts(engine.vision.processor, MiscountingRule("<image>", TOKENS_PER_IMAGE), tokenizer)
    with pytest.raises(RuntimeError, match="not supported"):
        prompts.check_rule()


def test_inputs_of_other_shapes_wait_for_a_prefill_of_their_own():
    small, large = {"pixel_values": torch.zeros(1, 3, 56, 56)}, {"pixel_values": torch.zeros(2, 3, 112, 112)}
    assert can_join([{}, small], {"pixel_values": torch.zeros(3, 3, 56, 56)})
    assert can_join([small], {}) and can_join([{}], large)
    assert not can_join([{}, small], large)
    assert not can_join([small], {"pixel_values": small["pixel_values"], "image_sizes": torch.zeros(1, 2)})
    assert concatenate_inputs([small, {}, small])["pixel_values"].shape[0] == 2
    assert concatenate_inputs([{}, {}]) == {}
