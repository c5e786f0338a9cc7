"""Driving a real engine step by step in tests: requests from prompt text, and a run's outputs."""

from __future__ import annotations

from collections import defaultdict

from broker.contracts import SamplingParams
from inference_worker.engines.base import ChoiceOutput, Engine, EngineRequest

MAX_STEPS = 300  # a guard: no engine test needs more steps than this


def request(chat_tokenizer, request_id: str, prompt: str, **sampling) -> EngineRequest:
    """A one-message request, greedy and 10 tokens long unless `sampling` says otherwise."""
    n = sampling.pop("n", 1)
    sampling.setdefault("temperature", 0.0)
    sampling.setdefault("max_tokens", 10)
    ids = chat_tokenizer.prompt_ids([{"role": "user", "content": prompt}])
    return EngineRequest(request_id, ids, SamplingParams(**sampling), n)


class Run:
    """What the engine produced over a whole run, per (request id, choice index); the batch it
    reached; and, for engines that report one (llama.cpp), what each decode ran."""

    def __init__(self) -> None:
        self.outputs: dict[tuple[str, int], list[ChoiceOutput]] = defaultdict(list)
        self.decodes: list = []
        self.most_running = 0

    def text(self, request_id: str, index: int = 0) -> str:
        return "".join(o.text for o in self.outputs[request_id, index])

    def tokens(self, request_id: str, index: int = 0) -> int:
        return sum(o.tokens for o in self.outputs[request_id, index])

    def finish_reason(self, request_id: str, index: int = 0) -> str | None:
        return self.outputs[request_id, index][-1].finish_reason


def run(engine: Engine, schedule: dict[int, list[EngineRequest]]) -> Run:
    """Step the engine until it is idle, adding each request at the step the schedule names."""
    result = Run()
    for step in range(MAX_STEPS):
        for added in schedule.get(step, []):
            engine.add(added)
        if not engine.has_work and step >= max(schedule):
            return result
        steps_before = getattr(engine, "steps", None)
        for output in engine.step():
            result.outputs[output.request_id, output.index].append(output)
        result.most_running = max(result.most_running, engine.running)
        if steps_before is not None and engine.steps > steps_before:
            result.decodes.append(engine.last_step)
    raise AssertionError("the engine did not finish within the step guard")


def run_out(engine: Engine) -> None:
    """Finish whatever a failed test left in the engine, so the next test starts idle."""
    for _ in range(MAX_STEPS):
        if not engine.has_work:
            return
        engine.step()
