"""What the ExLlamaV3 and ExLlamaV2 engines share: driving a job-based paged generator.

Both libraries have the same design: a generator owns a paged KV cache, takes jobs (one sequence
each) with `enqueue`, drops them with `cancel`, and `iterate()` runs one step of every active
job (prefill chunks and one token of each generating job) and returns result dicts with the
same keys. This class maps LlamaGate requests onto that: one job per choice, an admission check
against the cache before a request reaches the generator (the generator reserves prompt +
max_tokens pages when it starts a job, and refuses at `enqueue` a job bigger than the whole
cache), and the translation of results into ChoiceOutputs with exact token counts.

Like every engine, this one is driven from the generation loop's thread only: the generators
are not thread-safe, and nothing else ever touches them.
"""

from __future__ import annotations

import logging
from abc import abstractmethod
from collections import deque
from dataclasses import dataclass
from typing import Any

from inference_worker.constraints import GrammarCompiler, TokenConstraint
from inference_worker.engines.base import ChoiceOutput, Engine, EngineRequest
from inference_worker.engines.gpu import cache_tokens, kv_shape_of, pages_for, weights_bytes
from shared.errors import ContextLengthExceededError

log = logging.getLogger(__name__)


@dataclass
class ChoiceJob:
    """One choice of a request, running as one generator job."""

    request: EngineRequest
    index: int
    job: Any  # the library's job object
    counted_tokens: int = 0  # tokens reported to the loop so far


class PagedGeneratorEngine(Engine):
    """An Engine over a library generator; subclasses load it and build its jobs."""

    page_size: int = 256

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._waiting: deque[EngineRequest] = deque()
        self._running: dict[str, list[ChoiceJob]] = {}
        self._reserved: dict[str, int] = {}  # cache tokens held per running request
        self.cache_capacity = 0  # tokens; set by load()
        self.stop_token_ids: list[int] = []
        self.grammars: GrammarCompiler | None = None
        self.generator: Any = None  # the library's generator; set by load()

    # --- what each library provides ----------------------------------------------------------

    @abstractmethod
    def _new_job(self, request: EngineRequest, index: int, constraint: TokenConstraint | None) -> Any:
        """A library job for one choice of `request`, identified by (request_id, index)."""

    # Both libraries' generators take and return the same things under the same names.
    def _enqueue(self, job: Any) -> None:
        self.generator.enqueue(job)

    def _cancel(self, job: Any) -> None:
        self.generator.cancel(job)

    def _iterate(self) -> list[dict]:
        return self.generator.iterate()

    # --- the Engine interface ----------------------------------------------------------------

    @property
    def running(self) -> int:
        return sum(1 for jobs in self._running.values() for choice in jobs if choice.job is not None)

    @property
    def queued(self) -> int:
        return len(self._waiting)

    def add(self, request: EngineRequest) -> None:
        if request.grammar is not None and self.grammars is None:
            raise ValueError("this model's tokenizer does not support constrained output")
        if self.grammars is not None:
            self.grammars.constraint_for(request)  # compiles (and caches) now: a bad grammar fails here
        needed = self._tokens_needed(request)
        if needed > self.cache_capacity:
            # The loop already refuses requests beyond the context length, and load() makes the
            # cache hold at least one of those; only a wide `n` gets here.
            raise ContextLengthExceededError(
                f"This request needs {needed} tokens of KV cache ({request.n} choices of "
                f"prompt + max_tokens); this model's workers hold {self.cache_capacity}. Lower 'n' or 'max_tokens'.",
                param="n")
        self._waiting.append(self.prepared(request))

    def prepared(self, request: EngineRequest) -> EngineRequest:
        """The request as it waits for admission, once it is known to fit (engines with image
        encoders encode here, on the loop's thread)."""
        return request

    def abort(self, request_id: str) -> None:
        self._waiting = deque(r for r in self._waiting if r.request_id != request_id)
        for choice in self._running.pop(request_id, []):
            if choice.job is not None:
                self._cancel(choice.job)
        self._reserved.pop(request_id, None)

    def step(self) -> list[ChoiceOutput]:
        self._admit()
        if not self._running:
            return []
        outputs = []
        for result in self._iterate():
            output = self._output_for(result)
            if output is not None:
                outputs.append(output)
        return outputs

    # --- internals ------------------------------------------------------------------------------

    def _tokens_needed(self, request: EngineRequest) -> int:
        per_choice = pages_for(len(request.prompt_ids) + request.sampling.max_tokens, self.page_size)
        return request.n * per_choice * self.page_size

    def _admit(self) -> None:
        """Hand waiting requests to the generator, in order, while cache pages and batch slots last.
        A request that does not fit waits for running ones to end; it is never started half-way."""
        while self._waiting:
            request = self._waiting[0]
            needed = self._tokens_needed(request)
            if (sum(self._reserved.values()) + needed > self.cache_capacity
                    or self.running + request.n > self.max_sequences):
                return
            self._waiting.popleft()
            choices = [ChoiceJob(request, index, self._new_job(request, index,
                                                                 self.grammars.constraint_for(request)
                                                                 if self.grammars else None))
                       for index in range(request.n)]
            for choice in choices:
                self._enqueue(choice.job)
            self._running[request.request_id] = choices
            self._reserved[request.request_id] = needed

    def _output_for(self, result: dict) -> ChoiceOutput | None:
        request_id, index = result.get("identifier") or (None, None)
        choices = self._running.get(request_id)
        if not choices:
            return None  # a job aborted in this very step
        choice = choices[index]
        stage = result.get("stage")
        if stage == "error":
            raise RuntimeError(f"the generator failed a job: {result.get('error')!r}")
        if stage != "streaming":
            return None
        text = result.get("text") or ""
        ids = result.get("token_ids")
        tokens = int(ids.shape[-1]) if ids is not None else 0
        choice.counted_tokens += tokens
        finish_reason = None
        if result.get("eos"):
            # Tokens held back for a stop string that then matched are never emitted, but were
            # generated and are paid for: the job's own count settles the difference.
            total = int(result.get("new_tokens") or choice.counted_tokens)
            tokens += max(0, total - choice.counted_tokens)
            finish_reason = "length" if result.get("eos_reason") == "max_new_tokens" else "stop"
            self._choice_ended(request_id, choice)
        if not text and not tokens and finish_reason is None:
            return None
        return ChoiceOutput(request_id, index, text, tokens, finish_reason)

    def _choice_ended(self, request_id: str, choice: ChoiceJob) -> None:
        choice.job = None
        if all(c.job is None for c in self._running[request_id]):
            del self._running[request_id]
            self._reserved.pop(request_id, None)

    def size_cache(self, directory) -> int:
        """KV cache tokens for this worker, from the GPU's free memory less the weights to load."""
        import torch

        free, _ = torch.cuda.mem_get_info()
        return cache_tokens(free - weights_bytes(directory), kv_shape_of(directory), self.page_size,
                            self.settings.gpu_memory_fraction, self.spec.context_length,
                            self.settings.gpu_cache_tokens)

    def seed_for(self, request: EngineRequest, index: int) -> int | None:
        """Each choice of a seeded request samples its own reproducible sequence."""
        return None if request.sampling.seed is None else request.sampling.seed + index

    def stop_conditions(self, request: EngineRequest) -> list:
        return [*self.stop_token_ids, *request.sampling.stop]

    def make_grammar_compiler(self, vocab_size: int) -> None:
        """Constrained decoding with the same compiler as the CPU engines; a tokenizer llguidance
        cannot read leaves the model without it (constrained requests are then refused)."""
        try:
            self.grammars = GrammarCompiler(self.tokenizer.to_json(), vocab_size, self.stop_token_ids)
        except Exception as exc:  # noqa: BLE001 - llguidance rejects some tokenizer types
            log.warning("constrained decoding unavailable for this model", extra={"model": self.spec.id,
                                                                                  "error": repr(exc)})
            self.grammars = None
