"""Images in ExLlamaV3 prompts, over a fake of ExLlamaV3's vision encoder and Job.

The fakes follow exllamav3 1.6.5: `get_image_embeddings(tokenizer=, image=)` returns an MMEmbedding
whose `first_index`..`last_index` are ids (from 10^9 up) that the model's embedding layer maps to
its rows, and `Job(embeddings=[...])` takes them along. bench/gpu_vision_check.py runs the real
encoder on a GPU.
"""

from __future__ import annotations

import sys
import types
from dataclasses import dataclass

import pytest
from PIL import Image

from broker.contracts import SamplingParams
from inference_worker.engines.base import EngineRequest
from inference_worker.engines.exllamav3 import ExLlamaV3Engine
from inference_worker.engines.exllamav3_vision import ExLlamaV3Vision, splice_features
from shared.chat_tokenizer import ChatTokenizer
from inference_worker.engines.vision_checks import check_template
from shared.errors import ContextLengthExceededError, InvalidRequestError, ServerError
from shared.image_tokens import FixedImageTokens, PatchGridImageTokens, image_token_rule
from shared.images import DecodedImage
from shared.registry import ModelRegistry
from shared.settings import Settings
from tiny_vlm import TOKENS_PER_IMAGE, registry_entry

FIRST_FEATURE_ID = 1_000_000_000


@dataclass
class FakeEmbedding:
    first_index: int
    mm_length: int

    @property
    def last_index(self) -> int:
        return self.first_index + self.mm_length


class FakeEncoder:
    """Makes as many features as `rule` counts (or `extra` more), with ids from 10^9 up like exllamav3's."""

    def __init__(self, rule, extra: int = 0, fail: Exception | None = None):
        self.rule = rule
        self.extra = extra
        self.fail = fail
        self.next_id = FIRST_FEATURE_ID
        self.encoded: list[tuple[int, int]] = []

    def get_image_embeddings(self, tokenizer, image):
        if self.fail:
            raise self.fail
        self.encoded.append(image.size)
        length = self.rule.feature_tokens(*image.size) + self.extra
        embedding = FakeEmbedding(self.next_id, length)
        self.next_id += length
        return embedding


def picture(width: int, height: int) -> DecodedImage:
    return DecodedImage(Image.new("RGB", (width, height), (0, 90, 200)), "PNG")


def asking(*images: DecodedImage, text: str = "What is it?") -> tuple[dict, ...]:
    return ({"role": "user", "content": [*({"type": "image"} for _ in images), {"type": "text", "text": text}]},)


@pytest.fixture()
def tokenizer(tiny_vlm_dir) -> ChatTokenizer:
    return ChatTokenizer.from_directory(tiny_vlm_dir)


@pytest.fixture()
def rule() -> FixedImageTokens:
    return FixedImageTokens("<image>", TOKENS_PER_IMAGE)


@pytest.fixture()
def vision(tokenizer, rule) -> ExLlamaV3Vision:
    return ExLlamaV3Vision(FakeEncoder(rule), library_tokenizer=None, rule=rule, tokenizer=tokenizer)


def request_for(prompt, n: int = 1) -> EngineRequest:
    return EngineRequest("req-1", prompt.ids, SamplingParams(max_tokens=4, temperature=0.0), n,
                         model_inputs=prompt.model_inputs)


# --- splicing feature ids into the prompt --------------------------------------------------------

def test_each_images_tokens_become_its_feature_ids_in_order():
    ids = [5, 9, 9, 6, 9, 9, 9, 7]
    assert splice_features(ids, 9, [range(100, 102), range(200, 203)]) == [5, 100, 101, 6, 200, 201, 202, 7]


def test_images_side_by_side_are_split_where_the_first_ones_features_end():
    assert splice_features([9, 9, 9, 9, 9], 9, [range(100, 102), range(200, 203)]) == [100, 101, 200, 201, 202]


@pytest.mark.parametrize("features", [[range(100, 103)], [range(100, 101)], []])
def test_a_prompt_whose_image_tokens_do_not_match_the_features_is_refused(features):
    with pytest.raises(ValueError, match="2 image tokens"):
        splice_features([5, 9, 9, 6], 9, features)


# --- prompts and encoding ------------------------------------------------------------------------

def test_the_prompt_holds_the_tokens_the_api_counts_and_leaves_the_gpu_alone(vision, tokenizer, rule):
    images = [picture(640, 480), picture(20, 30)]
    text = tokenizer.render(asking(*images), content_parts=True)
    prompt = vision.prompt(text, images)
    counted = tokenizer.encode(rule.expand(text, [(i.width, i.height, "auto") for i in images]))
    assert prompt.ids == counted
    assert prompt.ids.count(vision.image_token_id) == 2 * TOKENS_PER_IMAGE
    assert vision.encoder.encoded == []  # the actor's thread builds text only
    assert [image.image for image in prompt.model_inputs["images"]] == [image.image for image in images]


def test_encoding_puts_each_images_feature_ids_where_its_tokens_were(vision, tokenizer):
    images = [picture(640, 480), picture(64, 64)]
    prompt = vision.prompt(tokenizer.render(asking(*images), content_parts=True), images)
    encoded = vision.encoded(request_for(prompt))
    first, second = encoded.model_inputs["embeddings"]
    assert vision.encoder.encoded == [(640, 480), (64, 64)]
    assert len(encoded.prompt_ids) == len(prompt.ids)  # what the API charged for
    assert vision.image_token_id not in encoded.prompt_ids
    features = [token for token in encoded.prompt_ids if token >= FIRST_FEATURE_ID]
    assert features == [*range(first.first_index, first.last_index), *range(second.first_index, second.last_index)]
    text_ids = [token for token, was in zip(encoded.prompt_ids, prompt.ids) if was != vision.image_token_id]
    assert text_ids == [token for token in prompt.ids if token != vision.image_token_id]


def test_an_encoder_making_other_counts_than_the_prompt_fails_only_that_request(vision, tokenizer, rule):
    vision.encoder = FakeEncoder(rule, extra=1)
    images = [picture(50, 50)]
    prompt = vision.prompt(tokenizer.render(asking(*images), content_parts=True), images)
    with pytest.raises(InvalidRequestError, match="image tokens"):
        vision.encoded(request_for(prompt))


def test_an_encoder_failure_is_a_server_error_for_that_request(vision, tokenizer, rule):
    vision.encoder = FakeEncoder(rule, fail=RuntimeError("CUDA out of memory"))
    images = [picture(50, 50)]
    prompt = vision.prompt(tokenizer.render(asking(*images), content_parts=True), images)
    with pytest.raises(ServerError, match="reading the images"):
        vision.encoded(request_for(prompt))


def test_a_prompt_placing_fewer_images_than_given_is_refused(vision, tokenizer):
    with pytest.raises(ValueError, match="placed 1 image"):
        vision.prompt(tokenizer.render(asking(picture(50, 50)), content_parts=True), [picture(50, 50)] * 2)


def test_a_qwen25_vl_prompt_holds_a_run_per_image_as_long_as_its_grid_between_the_vision_markers(tiny_qwen_vl_dir):
    tokenizer = ChatTokenizer.from_directory(tiny_qwen_vl_dir)
    rule = image_token_rule(tiny_qwen_vl_dir)
    check_template(tokenizer, rule)
    vision = ExLlamaV3Vision(FakeEncoder(rule), library_tokenizer=None, rule=rule, tokenizer=tokenizer)
    images = [picture(640, 480), picture(97, 311)]
    prompt = vision.prompt(tokenizer.render(asking(*images), content_parts=True), images)
    start, end = tokenizer.token_id("<|vision_start|>"), tokenizer.token_id("<|vision_end|>")
    starts = [i for i, token in enumerate(prompt.ids) if token == start]
    ends = [i for i, token in enumerate(prompt.ids) if token == end]
    assert [prompt.ids[s + 1:e] for s, e in zip(starts, ends)] == [
        [vision.image_token_id] * rule.feature_tokens(image.width, image.height) for image in images]
    encoded = vision.encoded(request_for(prompt))
    assert [e.mm_length for e in encoded.model_inputs["embeddings"]] == [rule.feature_tokens(640, 480),
                                                                          rule.feature_tokens(97, 311)]


def test_a_tokenizer_without_the_image_token_is_refused(tokenizer):
    with pytest.raises(RuntimeError, match="no '<\\|image_pad\\|>' token"):
        ExLlamaV3Vision(None, None, PatchGridImageTokens(14, 2, 3136, 1003520), tokenizer)


# --- the engine ----------------------------------------------------------------------------------

@pytest.fixture()
def fake_exllamav3(monkeypatch):
    """Just what the engine's _new_job imports from exllamav3: Job and two samplers."""
    jobs = []

    class Job:
        def __init__(self, **kwargs):
            self.kwargs = kwargs
            jobs.append(self)

    module = types.ModuleType("exllamav3")
    module.Job = Job
    sampler = types.ModuleType("exllamav3.generator.sampler")
    sampler.ArgmaxSampler = sampler.ComboSampler = lambda **kwargs: kwargs
    monkeypatch.setitem(sys.modules, "exllamav3", module)
    monkeypatch.setitem(sys.modules, "exllamav3.generator", types.ModuleType("exllamav3.generator"))
    monkeypatch.setitem(sys.modules, "exllamav3.generator.sampler", sampler)
    return jobs


class RecordingGenerator:
    def __init__(self):
        self.enqueued = []

    def enqueue(self, job):
        self.enqueued.append(job)

    def iterate(self):
        return []


@pytest.fixture()
def engine(tiny_vlm_dir, tokenizer, vision, tmp_path) -> ExLlamaV3Engine:
    registry_file = tmp_path / "models.toml"
    registry_file.write_text(registry_entry("tiny-vlm", tiny_vlm_dir).replace('"transformers"', '"exllamav3"'))
    spec = ModelRegistry.load(registry_file).get("tiny-vlm")
    engine = ExLlamaV3Engine(spec, Settings.from_env({}), tokenizer)
    engine.vision, engine.generator, engine.cache_capacity = vision, RecordingGenerator(), 1 << 20
    return engine


def test_the_engine_encodes_at_add_and_every_choice_job_carries_the_embeddings(engine, fake_exllamav3):
    images = [picture(300, 200)]
    prompt = engine.prompt(asking(*images), (), images)
    assert engine.vision.encoder.encoded == []
    engine.add(request_for(prompt, n=2))
    assert engine.vision.encoder.encoded == [(300, 200)]  # once per request, on the loop's thread
    engine.step()
    assert len(fake_exllamav3) == 2
    for job in fake_exllamav3:
        (embedding,) = job.kwargs["embeddings"]
        ids = job.kwargs["input_ids"][0].tolist()
        assert ids[ids.index(embedding.first_index):][:embedding.mm_length] == list(
            range(embedding.first_index, embedding.last_index))


def test_text_only_requests_to_a_vision_model_take_no_embeddings(engine, fake_exllamav3):
    prompt = engine.prompt(({"role": "user", "content": "Hello"},), (), [])
    assert "Hello" in engine.tokenizer.decode(prompt.ids)  # rendered as content parts, as vision templates need
    engine.add(request_for(prompt))
    engine.step()
    (job,) = fake_exllamav3
    assert job.kwargs["embeddings"] is None and engine.vision.encoder.encoded == []


def test_a_request_too_big_for_the_cache_is_refused_before_its_images_are_encoded(engine, fake_exllamav3):
    images = [picture(300, 200)]
    prompt = engine.prompt(asking(*images), (), images)
    engine.cache_capacity = len(prompt.ids) + 4
    with pytest.raises(ContextLengthExceededError):
        engine.add(request_for(prompt, n=2))
    assert engine.vision.encoder.encoded == [] and engine.queued == 0
