"""TransformersEngine with the real default model: continuous batching changes nothing about the output."""

from __future__ import annotations

import dataclasses
from collections import defaultdict

import pytest

from inference_worker.engines import transformers_cpu
from inference_worker.engines.sampling import ChoiceSampler
from inference_worker.engines.transformers_cpu import TransformersEngine
from shared.settings import Settings
from tests.unit.inference_worker.engines.driving import request, run, run_out

LONG_CONTEXT = ("The river rose through the night. By morning the lower town was under water, and the "
                "ferry that linked the two banks had been torn from its moorings and carried downstream. ") * 3
PROMPTS = {
    "short": "Hi!",
    "medium": "Write a long story about a dragon who learns to cook.",
    "long": LONG_CONTEXT + "Continue the story in your own words.",
}


@pytest.fixture(scope="module")
def engine(registry, chat_tokenizer) -> TransformersEngine:
    # Loading dequantizes the GGUF weights: tens of seconds, so once per module. One torch thread:
    # a tiny model gains little from more, and oversubscribed cores (a worker running beside the
    # tests) made steps several times slower.
    spec = registry.get("smollm2-135m-instruct-transformers")
    assert spec is not None and spec.engine == "transformers"
    engine = TransformersEngine(spec, Settings.from_env({}, torch_threads=1), chat_tokenizer)
    engine.load()
    return engine


@pytest.fixture(autouse=True)
def idle_engine_after_each_test(request):
    """A failing test may leave requests behind: run them out so the next test starts idle."""
    yield
    if "engine" in request.fixturenames:
        run_out(request.getfixturevalue("engine"))


@pytest.fixture
def sampled_tokens(monkeypatch) -> dict[tuple[int, int], list[int]]:
    """Every token the engine samples, by the request's seed and the choice's index.

    Greedy sampling ignores the seed, so tests give each greedy request a seed of its own as a tag.
    """
    tokens: dict[tuple[int, int], list[int]] = defaultdict(list)

    class RecordingSampler(ChoiceSampler):
        def __init__(self, params, index, vocab_size):
            super().__init__(params, index, vocab_size)
            self._key = (params.seed, index)

        def sample(self, logits):
            token = super().sample(logits)
            tokens[self._key].append(token)
            return token

    monkeypatch.setattr(transformers_cpu, "ChoiceSampler", RecordingSampler)
    return tokens


def test_batched_greedy_outputs_equal_solo_outputs(engine, chat_tokenizer, sampled_tokens):
    solo_tag = {name: tag for tag, name in enumerate(PROMPTS)}
    batch_tag = {name: tag + 100 for tag, name in enumerate(PROMPTS)}
    solo = {}
    for name, prompt in PROMPTS.items():
        solo_run = run(engine, {0: [request(chat_tokenizer, name, prompt, seed=solo_tag[name])]})
        solo[name] = (sampled_tokens[solo_tag[name], 0], solo_run.text(name), solo_run.finish_reason(name))

    batched = {name: request(chat_tokenizer, name, prompt, seed=batch_tag[name]) for name, prompt in PROMPTS.items()}
    # Each prompt joins a batch that is already decoding the earlier ones.
    batch_run = run(engine, {0: [batched["short"]], 2: [batched["long"]], 5: [batched["medium"]]})
    assert batch_run.most_running == 3, "the three requests ran together"
    for name in PROMPTS:
        tokens = sampled_tokens[batch_tag[name], 0]
        assert (tokens, batch_run.text(name), batch_run.finish_reason(name)) == solo[name], name
        assert len(tokens) > 1


def test_max_tokens_ends_with_finish_reason_length(engine, chat_tokenizer):
    result = run(engine, {0: [request(chat_tokenizer, "r", PROMPTS["medium"], max_tokens=3)]})
    outputs = result.outputs["r", 0]
    assert [o.finish_reason for o in outputs] == [None, None, "length"]
    assert sum(o.tokens for o in outputs) == 3
    assert result.text("r")


def test_stop_string_ends_with_finish_reason_stop_and_is_not_emitted(engine, chat_tokenizer):
    free = run(engine, {0: [request(chat_tokenizer, "free", PROMPTS["medium"], max_tokens=16)]}).text("free")
    words = free.split()
    assert len(words) >= 4, free
    stop = " " + words[2]  # a stop string the greedy answer is known to contain, mid-answer
    expected = free[:free.index(stop)]

    stopped = run(engine, {0: [request(chat_tokenizer, "stopped", PROMPTS["medium"], max_tokens=16,
                                       stop=(stop,))]})
    assert stopped.finish_reason("stopped") == "stop"
    assert stopped.text("stopped") == expected
    assert stop not in stopped.text("stopped")


def test_abort_frees_the_running_slot(engine, chat_tokenizer):
    engine.add(request(chat_tokenizer, "kept", PROMPTS["short"], max_tokens=6))
    engine.add(request(chat_tokenizer, "aborted", PROMPTS["medium"], max_tokens=100))
    engine.step()  # both prefilled together
    assert engine.running == 2
    engine.abort("aborted")
    outputs = engine.step()
    assert engine.running == 1
    assert {o.request_id for o in outputs} == {"kept"}
    result = run(engine, {0: []})
    assert set(result.outputs) == {("kept", 0)}


def test_abort_of_a_queued_request_removes_it(engine, chat_tokenizer):
    engine.add(request(chat_tokenizer, "queued", PROMPTS["short"]))
    assert engine.queued == 1
    engine.abort("queued")
    assert engine.queued == 0 and not engine.has_work
    assert engine.step() == []


def test_abort_of_an_unknown_request_is_ignored(engine):
    engine.abort("nobody")
    assert not engine.has_work


def test_choices_of_a_greedy_request_are_identical(engine, chat_tokenizer, sampled_tokens):
    result = run(engine, {0: [request(chat_tokenizer, "wide", PROMPTS["short"], n=2, max_tokens=6, seed=7)]})
    assert sampled_tokens[7, 0] == sampled_tokens[7, 1]
    assert len(sampled_tokens[7, 0]) > 1
    assert result.text("wide", 0) == result.text("wide", 1)


def test_seeded_sampling_is_reproducible(engine, chat_tokenizer):
    texts = [run(engine, {0: [request(chat_tokenizer, f"seeded-{i}", PROMPTS["medium"], temperature=1.0,
                                      seed=1234, max_tokens=8)]}).text(f"seeded-{i}")
             for i in range(2)]
    assert texts[0] == texts[1] and texts[0]


def test_abort_frees_the_slot_at_once(engine, chat_tokenizer):
    engine.add(request(chat_tokenizer, "aborted", PROMPTS["short"], max_tokens=100))
    engine.step()
    assert engine.running == 1
    try:
        engine.abort("aborted")
        assert engine.running == 0
        assert not engine.has_work
    finally:
        engine.step()  # applies a deferred abort, so the next test finds the engine idle


def test_constrained_and_free_requests_share_a_batch(engine, chat_tokenizer):
    """The grammar binds its own row only: the free request's greedy text is the same as alone."""
    import json

    from shared.grammars import json_schema_grammar

    schema = {"type": "object", "properties": {"answer": {"type": "string", "maxLength": 10}},
              "required": ["answer"], "additionalProperties": False}
    free_alone = run(engine, {0: [request(chat_tokenizer, "alone", PROMPTS["medium"], max_tokens=12)]})
    constrained = dataclasses.replace(request(chat_tokenizer, "json", PROMPTS["short"], max_tokens=40),
                                      grammar=json_schema_grammar(schema, strict=True))
    together = run(engine, {0: [constrained, request(chat_tokenizer, "free", PROMPTS["medium"], max_tokens=12)]})
    assert together.most_running == 2
    assert together.text("free") == free_alone.text("alone")
    assert together.finish_reason("json") == "stop"
    assert set(json.loads(together.text("json"))) == {"answer"}
