"""PagedGeneratorEngine (what the ExLlamaV3/V2 engines share) over a fake job-based generator.

The fake follows the libraries' contract: `enqueue`, `cancel`, and `iterate()` returning result
dicts with `identifier`, `stage`, `text`, `token_ids`, `eos`, `eos_reason` and `new_tokens`, and it
can hold tokens back the way a partly matched stop string does. The real generators run in
bench/gpu_check.py on a GPU.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
import torch

from broker.contracts import SamplingParams
from inference_worker.engines.base import EngineRequest
from inference_worker.engines.paged_generator import PagedGeneratorEngine
from shared.errors import ContextLengthExceededError
from shared.settings import Settings


@dataclass
class FakeJob:
    identifier: tuple[str, int]
    max_new_tokens: int
    hold_from: int | None = None  # tokens from here on are held back, then the job stops (stop string)
    generated: int = 0
    held: int = 0


@dataclass
class FakeGenerator:
    active: list[FakeJob] = field(default_factory=list)
    most_active: int = 0
    fail: bool = False

    def iterate(self) -> list[dict]:
        if self.fail:
            return [{"identifier": self.active[0].identifier, "stage": "error", "eos": True, "error": "boom"}]
        self.most_active = max(self.most_active, len(self.active))
        results = []
        for job in list(self.active):
            job.generated += 1
            result = {"identifier": job.identifier, "stage": "streaming", "eos": False}
            if job.hold_from is not None and job.generated > job.hold_from:
                job.held += 1
                if job.held == 2:  # the stop string completed: held tokens are never emitted
                    result.update(eos=True, eos_reason="stop_string", new_tokens=job.generated)
                    self.active.remove(job)
            else:
                result.update(text="x", token_ids=torch.tensor([[7]]))
                if job.generated == job.max_new_tokens:
                    result.update(eos=True, eos_reason="max_new_tokens", new_tokens=job.generated)
                    self.active.remove(job)
            results.append(result)
        return results


class FakeEngine(PagedGeneratorEngine):
    name = "fake"

    def __init__(self, *args, cache_capacity: int, hold_from: int | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.generator = FakeGenerator()
        self.cache_capacity = cache_capacity
        self.hold_from = hold_from
        self.cancelled: list[tuple[str, int]] = []

    def load(self) -> None:
        pass

    def _new_job(self, request, index, constraint):
        return FakeJob((request.request_id, index), request.sampling.max_tokens, self.hold_from)

    def _enqueue(self, job) -> None:
        self.generator.active.append(job)

    def _cancel(self, job) -> None:
        self.cancelled.append(job.identifier)
        self.generator.active.remove(job)

    def _iterate(self) -> list[dict]:
        return self.generator.iterate()


def make_engine(default_spec, chat_tokenizer, max_batch_size=8, **kwargs) -> FakeEngine:
    return FakeEngine(default_spec, Settings.from_env({}, max_batch_size=max_batch_size), chat_tokenizer, **kwargs)


def request(request_id: str, prompt_tokens: int = 10, max_tokens: int = 5, n: int = 1) -> EngineRequest:
    return EngineRequest(request_id, [1] * prompt_tokens, SamplingParams(max_tokens=max_tokens), n=n)


def run(engine, limit: int = 100) -> dict:
    totals: dict = {}
    for _ in range(limit):
        if not engine.has_work:
            break
        for out in engine.step():
            entry = totals.setdefault((out.request_id, out.index), {"text": "", "tokens": 0, "finish": None})
            entry["text"] += out.text
            entry["tokens"] += out.tokens
            entry["finish"] = out.finish_reason or entry["finish"]
    return totals


def test_each_choice_is_a_job_and_ends_with_its_length(default_spec, chat_tokenizer):
    engine = make_engine(default_spec, chat_tokenizer, cache_capacity=4096)
    engine.add(request("a", max_tokens=5, n=2))
    totals = run(engine)
    assert totals == {("a", 0): {"text": "xxxxx", "tokens": 5, "finish": "length"},
                      ("a", 1): {"text": "xxxxx", "tokens": 5, "finish": "length"}}
    assert not engine.has_work and engine._reserved == {}


def test_tokens_held_for_a_stop_string_are_still_counted(default_spec, chat_tokenizer):
    engine = make_engine(default_spec, chat_tokenizer, cache_capacity=4096, hold_from=3)
    engine.add(request("a", max_tokens=50))
    totals = run(engine)
    # 3 tokens emitted, then 2 generated and held until the stop string matched: 5 are paid for.
    assert totals[("a", 0)] == {"text": "xxx", "tokens": 5, "finish": "stop"}


def test_requests_wait_for_cache_pages_and_never_start_half_way(default_spec, chat_tokenizer):
    # 300 prompt + 200 generated tokens = 2 pages of 256 per request; the cache holds 5 pages.
    engine = make_engine(default_spec, chat_tokenizer, cache_capacity=5 * 256)
    for name in "abc":
        engine.add(request(name, prompt_tokens=300, max_tokens=200))
    engine.step()
    assert engine.running == 2 and engine.queued == 1
    totals = run(engine, limit=1000)
    assert {key[0] for key in totals} == {"a", "b", "c"}
    assert engine.generator.most_active == 2


def test_a_finished_choice_leaves_the_batch_before_its_siblings(default_spec, chat_tokenizer):
    engine = make_engine(default_spec, chat_tokenizer, cache_capacity=4096)
    engine.add(request("a", max_tokens=5, n=2))
    engine.step()
    engine._running["a"][0].job.max_new_tokens = 2  # choice 0 ends on the next step, choice 1 goes on
    engine.step()
    assert engine.running == 1


def test_batch_slots_limit_admission_per_request(default_spec, chat_tokenizer):
    engine = make_engine(default_spec, chat_tokenizer, max_batch_size=4, cache_capacity=1 << 20)
    engine.add(request("a", n=3))
    engine.add(request("b", n=2))  # would make 5 sequences: waits
    engine.step()
    assert engine.running == 3 and engine.queued == 1
    run(engine)
    assert engine.generator.most_active == 3


def test_abort_cancels_running_jobs_and_drops_waiting_ones(default_spec, chat_tokenizer):
    engine = make_engine(default_spec, chat_tokenizer, max_batch_size=2, cache_capacity=1 << 20)
    engine.add(request("a", max_tokens=100, n=2))
    engine.add(request("b", max_tokens=100))
    engine.step()
    engine.abort("a")
    engine.abort("b")
    assert sorted(engine.cancelled) == [("a", 0), ("a", 1)]
    assert not engine.has_work and engine.generator.active == [] and engine._reserved == {}
    engine.abort("unknown")  # ignored


def test_a_request_larger_than_the_whole_cache_is_refused_at_once(default_spec, chat_tokenizer):
    engine = make_engine(default_spec, chat_tokenizer, cache_capacity=512)
    with pytest.raises(ContextLengthExceededError, match="KV cache") as refusal:
        engine.add(request("a", prompt_tokens=300, max_tokens=300))
    assert refusal.value.status == 400


def test_a_grammar_is_refused_when_the_tokenizer_has_no_grammar_support(default_spec, chat_tokenizer):
    engine = make_engine(default_spec, chat_tokenizer, cache_capacity=4096)
    with pytest.raises(ValueError, match="constrained"):
        engine.add(EngineRequest("a", [1], SamplingParams(), grammar='{"grammars": []}'))


def test_a_failed_job_fails_the_step(default_spec, chat_tokenizer):
    engine = make_engine(default_spec, chat_tokenizer, cache_capacity=4096)
    engine.add(request("a"))
    engine.generator.fail = True
    with pytest.raises(RuntimeError, match="boom"):
        engine.step()


def test_choices_of_a_seeded_request_get_their_own_seeds(default_spec, chat_tokenizer):
    engine = make_engine(default_spec, chat_tokenizer, cache_capacity=4096)
    seeded = EngineRequest("a", [1], SamplingParams(seed=10), n=2)
    assert [engine.seed_for(seeded, i) for i in range(2)] == [10, 11]
    assert engine.seed_for(request("b"), 0) is None
