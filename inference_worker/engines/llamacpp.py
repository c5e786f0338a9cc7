"""The llama.cpp engine: GGUF models on llama-cpp-python's low-level API, continuously batched.

One llama.cpp context holds every running choice in one KV cache, under a sequence id of its own.
Each step builds one batch: the next token of every running choice, plus as many prompt tokens
of newly admitted requests as the batch has room for (a long prompt spreads over several steps),
and runs it with a single `llama_decode`. Each choice then samples from its own row of logits
with a sampler chain of its own. A choice that ends or is aborted leaves the KV cache at once and
its sequence id goes back to the pool.

Prompts are tokenized with the shared chat tokenizer (the model's own template, the same ids the
API counted), and text comes out through the shared TextStream, so both CPU engines agree on
usage, detokenization and stop strings.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass, field

from inference_worker.constraints import GrammarCompiler, TokenConstraint
from inference_worker.engines.base import ChoiceOutput, Engine, EngineRequest
from inference_worker.engines.llamacpp_runtime import ContextConfig, LlamaContext, Sampler, default_threads
from inference_worker.text_stream import TextStream

log = logging.getLogger(__name__)

# The most prompt tokens one step prefills: a burst of new prompts is spread over several steps,
# so that running choices keep getting a token every step (~1.5 s per 512 tokens on 2 cores).
PREFILL_TOKENS_PER_STEP = 512


@dataclass
class _Choice:
    request: EngineRequest
    index: int
    seq_id: int
    sampler: Sampler
    stream: TextStream
    position: int = 0  # this sequence's tokens in the KV cache
    generated: int = 0
    next_token: int = -1  # sampled, not yet decoded
    constraint: TokenConstraint | None = None  # the output grammar's state, for constrained requests


@dataclass
class _Prefill:
    """A request whose prompt is going into the KV cache, shared by all its choices."""

    request: EngineRequest
    choices: list[_Choice]
    reserved: int  # KV cells held for the prompt and every choice's max_tokens
    fed: int = 0  # prompt tokens already decoded


@dataclass(frozen=True)
class StepStats:
    """What the last `llama_decode` ran: how many choices decoded together, and prompt tokens."""

    decoded_sequences: int = 0
    prompt_tokens: int = 0
    request_ids: frozenset[str] = field(default_factory=frozenset)


class LlamaCppEngine(Engine):
    name = "llamacpp"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.context: LlamaContext | None = None
        self._queue: deque[EngineRequest] = deque()
        self._prefills: list[_Prefill] = []
        self._choices: list[_Choice] = []
        self._free_seq_ids: list[int] = []
        self._reserved: dict[str, int] = {}  # KV cells held per admitted request
        self._kv_capacity = 0
        self._stop_ids: frozenset[int] = frozenset()
        self.last_step = StepStats()
        self.steps = 0

    def load(self) -> None:
        threads = self.settings.llamacpp_threads or default_threads()
        # Never smaller than one full-length request; see the setting's comment for the default.
        kv_tokens = max(self.settings.llamacpp_kv_tokens, self.spec.context_length)
        config = ContextConfig(kv_tokens=kv_tokens, max_sequences=self.max_sequences,
                               batch_tokens=PREFILL_TOKENS_PER_STEP + self.max_sequences, threads=threads)
        weights = self.spec.weights.resolve()
        if self.spec.weights.format != "gguf":
            raise ValueError(f"the llamacpp engine loads GGUF files; {self.spec.id!r} has {self.spec.weights.format!r}")
        log.info("loading model", extra={"model": self.spec.id, "weights": str(weights), "threads": threads,
                                         "kv_tokens": kv_tokens})
        started = time.monotonic()
        self.context = LlamaContext(weights, config)
        self._kv_capacity = kv_tokens
        self._free_seq_ids = list(range(self.max_sequences - 1, -1, -1))
        eos = self.tokenizer.eos_token_id
        self._stop_ids = frozenset({eos} if eos is not None else set())
        self.grammars = GrammarCompiler(self.tokenizer.to_json(), self.context.vocab_size, self._stop_ids)
        log.info("model loaded", extra={"model": self.spec.id, "seconds": round(time.monotonic() - started, 1)})

    @property
    def running(self) -> int:
        return len(self._choices) + sum(len(p.choices) for p in self._prefills)

    @property
    def queued(self) -> int:
        return len(self._queue)

    def add(self, request: EngineRequest) -> None:
        self.grammars.constraint_for(request)  # compiles (and caches) now: a bad grammar fails here
        self._queue.append(request)

    def abort(self, request_id: str) -> None:
        self._queue = deque(r for r in self._queue if r.request_id != request_id)
        for prefill in [p for p in self._prefills if p.request.request_id == request_id]:
            self._prefills.remove(prefill)
            for choice in prefill.choices:
                self._release(choice)
        for choice in [c for c in self._choices if c.request.request_id == request_id]:
            self._choices.remove(choice)
            self._release(choice)

    def step(self) -> list[ChoiceOutput]:
        self._admit()
        batch = self.context.batch
        batch.clear()
        decoding = list(self._choices)
        rows = [batch.add(c.next_token, c.position, (c.seq_id,), True) for c in decoding]
        prompt_tokens, finishing = self._add_prompt_tokens(PREFILL_TOKENS_PER_STEP)
        if batch.size == 0:
            return []
        self.context.decode()
        self.steps += 1
        self.last_step = StepStats(len(decoding), prompt_tokens,
                                   frozenset(c.request.request_id for c in decoding))
        outputs = []
        for row, choice in zip(rows, decoding):
            choice.position += 1
            outputs.append(self._accept(choice, self._sample(choice, row)))
        for row, prefill in finishing:
            self._prefills.remove(prefill)
            for choice in prefill.choices:
                choice.position = len(prefill.request.prompt_ids)
                self._choices.append(choice)
                outputs.append(self._accept(choice, self._sample(choice, row)))
        return outputs

    def _admit(self) -> None:
        """Start the prompts of queued requests, in order, while sequence ids and KV cells last."""
        while self._queue:
            request = self._queue[0]
            # Reserving max_tokens up front means a running choice never runs out of cells. A
            # request larger than the whole cache still runs, alone.
            needed = min(len(request.prompt_ids) + request.n * request.sampling.max_tokens, self._kv_capacity)
            in_use = sum(self._reserved.values())
            if request.n > len(self._free_seq_ids) or in_use + needed > self._kv_capacity:
                return
            samplers = [Sampler(request.sampling, index, self.context.vocab_size) for index in range(request.n)]
            self._queue.popleft()
            choices = [_Choice(request, index, self._free_seq_ids.pop(), sampler,
                               TextStream(self.tokenizer.decode, request.sampling.stop),
                               constraint=self.grammars.constraint_for(request))
                       for index, sampler in enumerate(samplers)]
            self._reserved[request.request_id] = needed
            self._prefills.append(_Prefill(request, choices, needed))

    def _add_prompt_tokens(self, budget: int) -> tuple[int, list[tuple[int, _Prefill]]]:
        """Fill the batch with prompt tokens; returns how many, and the prompts completed (with the
        row holding each one's last token, whose logits give the first token of every choice)."""
        batch = self.context.batch
        added = 0
        finishing = []
        for prefill in self._prefills:
            prompt = prefill.request.prompt_ids
            seq_ids = [c.seq_id for c in prefill.choices]
            take = min(len(prompt) - prefill.fed, budget - added, batch.room)
            for position in range(prefill.fed, prefill.fed + take):
                row = batch.add(prompt[position], position, seq_ids, position == len(prompt) - 1)
            prefill.fed += take
            added += take
            if take and prefill.fed == len(prompt):
                finishing.append((row, prefill))
            if added >= budget or batch.room == 0:
                break
        return added, finishing

    def _sample(self, choice: _Choice, row: int) -> int:
        if choice.constraint is not None and choice.constraint.active:
            # Forbidden tokens get -inf in the context's own logits row, before the sampler chain reads it.
            self.context.mask_logits(row, choice.constraint)
        return self.context.sample(choice.sampler, row)

    def _accept(self, choice: _Choice, token: int) -> ChoiceOutput:
        """Apply a sampled token to its choice: text to emit, and whether the choice has ended."""
        choice.generated += 1
        request_id, index = choice.request.request_id, choice.index
        if token in self._stop_ids or self.context.is_end_of_generation(token):
            return self._finish(choice, choice.stream.finish(), "stop")
        text, stopped = choice.stream.push(token)
        if stopped:
            return self._finish(choice, text, "stop")
        if choice.constraint is not None:
            choice.constraint.observe(token, text)
            if choice.constraint.complete:  # the grammar allows nothing more (not even more whitespace)
                return self._finish(choice, text + choice.stream.finish(), "stop")
        if choice.generated >= choice.request.sampling.max_tokens:
            return self._finish(choice, text + choice.stream.finish(), "length")
        choice.next_token = token
        return ChoiceOutput(request_id, index, text, 1, None)

    def _finish(self, choice: _Choice, text: str, reason: str) -> ChoiceOutput:
        self._choices.remove(choice)
        self._release(choice)
        return ChoiceOutput(choice.request.request_id, choice.index, text, 1, reason)

    def _release(self, choice: _Choice) -> None:
        """Free a choice's KV cells, sampler and sequence id; the request's reservation goes with
        its last choice."""
        self.context.forget(choice.seq_id)
        choice.sampler.close()
        self._free_seq_ids.append(choice.seq_id)
        request_id = choice.request.request_id
        still_running = any(c.request.request_id == request_id for c in self._choices) or any(
            p.request.request_id == request_id for p in self._prefills)
        if not still_running:
            self._reserved.pop(request_id, None)
