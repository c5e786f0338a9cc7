"""The benchmark engine: emits fixed tokens without computing anything.

It exists to measure LlamaGate's own path (HTTP, RabbitMQ, the worker loop, Redis, SSE) apart
from any model. It tokenizes prompts like a real engine (so prompt usage is real), batches like
one, and emits one token per running choice per step, optionally pacing steps with
LLAMAGATE_BENCHMARK_STEP_MS. Never register it under a real model's name.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

from inference_worker.engines.base import ChoiceOutput, Engine, EngineRequest
from inference_worker.text_stream import StopStringMatcher

WORDS = (" The", " quick", " brown", " fox", " jumps", " over", " the", " lazy", " dog", ".")
# What a model flagged "reasoning" emits: its thinking between markers, then the answer.
REASONING_WORDS = ("<think>", "Let", " me", " think", ".", "</think>") + WORDS


@dataclass
class _Choice:
    request: EngineRequest
    index: int
    stops: StopStringMatcher
    generated: int = 0


class BenchmarkEngine(Engine):
    name = "benchmark"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._queue: deque[EngineRequest] = deque()
        self._choices: list[_Choice] = []
        self._step_seconds = self.settings.benchmark_step_ms / 1000.0
        self._words = REASONING_WORDS if self.spec.supports("reasoning") else WORDS

    def load(self) -> None:
        """Nothing to load."""

    @property
    def running(self) -> int:
        return len(self._choices)

    @property
    def queued(self) -> int:
        return len(self._queue)

    def add(self, request: EngineRequest) -> None:
        if request.grammar is not None:
            raise ValueError("The benchmark engine cannot constrain its output (response_format, tool_choice).")
        self._queue.append(request)

    def abort(self, request_id: str) -> None:
        self._queue = deque(r for r in self._queue if r.request_id != request_id)
        self._choices = [c for c in self._choices if c.request.request_id != request_id]

    def step(self) -> list[ChoiceOutput]:
        if self._step_seconds:
            time.sleep(self._step_seconds)
        while self._queue and len(self._choices) + self._queue[0].n <= self.max_sequences:
            request = self._queue.popleft()
            self._choices.extend(_Choice(request, i, StopStringMatcher(request.sampling.stop))
                                 for i in range(request.n))
        outputs = [self._next(choice) for choice in self._choices]
        self._choices = [c for c, o in zip(self._choices, outputs) if o.finish_reason is None]
        return outputs

    def _next(self, choice: _Choice) -> ChoiceOutput:
        word = self._words[choice.generated % len(self._words)]
        choice.generated += 1
        text, stopped = choice.stops.feed(word)
        request_id, index = choice.request.request_id, choice.index
        if stopped:
            return ChoiceOutput(request_id, index, text, 1, "stop")
        if choice.generated >= choice.request.sampling.max_tokens:
            return ChoiceOutput(request_id, index, text + choice.stops.flush(), 1, "length")
        return ChoiceOutput(request_id, index, text, 1, None)
