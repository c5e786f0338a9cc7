"""The CPU engine: a transformers causal LM on PyTorch, continuously batched.

Every step either prefills the requests that arrived (together, left-padded) and merges them into
the running batch, or runs one decode step for the whole batch. Requests join and leave between
steps, so a new request never waits for the running ones to finish.

Models with the vision capability load as image-text-to-text models with their processor; their
images enter at prefill (as pixel values the model encodes in place of the image tokens), and
decoding is the same as for text.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from dataclasses import dataclass

import torch

from inference_worker.constraints import GrammarCompiler, TokenConstraint, apply_masks
from inference_worker.engines.base import ChoiceOutput, Engine, EngineRequest
from inference_worker.engines.batch_cache import BatchCache, RowRef, prefill_inputs
from inference_worker.engines.sampling import ChoiceSampler
from inference_worker.engines.vision_prompts import VisionPrompts, can_join, concatenate_inputs
from inference_worker.text_stream import TextStream

log = logging.getLogger(__name__)

# A prefill of more (padded) prompt tokens than this is split over several steps, so that the
# running requests keep getting tokens while a burst of new ones is admitted.
MAX_PREFILL_TOKENS = 2048


@dataclass
class _Choice:
    request: EngineRequest
    index: int
    sampler: ChoiceSampler
    stream: TextStream
    constraint: TokenConstraint | None = None
    generated: int = 0
    next_token: int = -1


class TransformersEngine(Engine):
    name = "transformers"
    accepts_images = True  # for models with the vision capability (LLaVA family)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.model = None
        self._queue: deque[EngineRequest] = deque()
        self._choices: list[_Choice] = []
        self._cache: BatchCache | None = None
        self._prefilled_last = False
        self._stop_ids: frozenset[int] = frozenset()
        self._pad_id = 0
        self._num_layers = 0
        self.grammars: GrammarCompiler | None = None
        self.vision: VisionPrompts | None = None

    def load(self) -> None:
        from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

        threads = self.settings.torch_threads or os.cpu_count() or 1
        torch.set_num_threads(threads)
        weights = self.spec.weights.resolve()
        log.info("loading model", extra={"model": self.spec.id, "weights": str(weights), "threads": threads})
        started = time.monotonic()
        if self.spec.weights.format == "gguf":
            # transformers dequantizes GGUF tensors to float32, with a progress bar on stderr.
            model = AutoModelForCausalLM.from_pretrained(str(weights.parent), gguf_file=weights.name,
                                                         dtype=torch.float32)
        elif self.spec.supports("vision"):
            model = AutoModelForImageTextToText.from_pretrained(str(weights), dtype=torch.float32)
            self.vision = VisionPrompts.load(weights, self.tokenizer)
        else:
            model = AutoModelForCausalLM.from_pretrained(str(weights), dtype=torch.float32)
        self.model = model.eval()
        self._num_layers = model.config.get_text_config(decoder=True).num_hidden_layers
        self._stop_ids = frozenset(self._collect_stop_ids())
        eos = self.tokenizer.eos_token_id
        self._pad_id = eos if eos is not None else 0
        self.grammars = GrammarCompiler(self.tokenizer.to_json(), model.config.get_text_config(decoder=True).vocab_size,
                                        self._stop_ids)
        log.info("model loaded", extra={"model": self.spec.id, "seconds": round(time.monotonic() - started, 1),
                                        "stop_token_ids": sorted(self._stop_ids)})

    def _collect_stop_ids(self) -> set[int]:
        ids: set[int] = set()
        configured = self.model.generation_config.eos_token_id
        if isinstance(configured, int):
            ids.add(configured)
        elif configured:
            ids.update(configured)
        if self.tokenizer.eos_token_id is not None:
            ids.add(self.tokenizer.eos_token_id)
        return ids

    @property
    def running(self) -> int:
        return len(self._choices)

    @property
    def queued(self) -> int:
        return len(self._queue)

    def add(self, request: EngineRequest) -> None:
        self.grammars.constraint_for(request)  # compiles (and caches) now: a bad grammar fails here
        self._queue.append(request)

    def abort(self, request_id: str) -> None:
        self._queue = deque(r for r in self._queue if r.request_id != request_id)
        if any(c.request.request_id == request_id for c in self._choices):
            with torch.inference_mode():
                self._keep([c for c in self._choices if c.request.request_id != request_id])

    def step(self) -> list[ChoiceOutput]:
        with torch.inference_mode():
            free = self.max_sequences - len(self._choices)
            admit_now = self._queue and free >= self._queue[0].n and not (self._prefilled_last and self._choices)
            if admit_now:
                self._prefilled_last = True
                return self._prefill(free)
            self._prefilled_last = False
            return self._decode() if self._choices else []

    def _prefill(self, free: int) -> list[ChoiceOutput]:
        batch: list[EngineRequest] = []
        width = 0
        while self._queue and self._queue[0].n <= free:
            candidate = self._queue[0]
            new_width = max(width, len(candidate.prompt_ids))
            if batch and new_width * (len(batch) + 1) > MAX_PREFILL_TOKENS:
                break
            if not can_join([r.model_inputs for r in batch], candidate.model_inputs):
                break  # images of another shape: prefilled in a step of their own
            batch.append(self._queue.popleft())
            free -= candidate.n
            width = new_width
        ids, mask, positions = prefill_inputs([r.prompt_ids for r in batch], self._pad_id)
        cache = BatchCache(self._num_layers, [len(r.prompt_ids) for r in batch])
        # Pixel values in row order: the model fills the batch's image tokens with them in that order.
        extra = concatenate_inputs([r.model_inputs for r in batch])
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, cache=cache,
                         use_cache=True, logits_to_keep=1, **extra)
        logits = out.logits[:, -1].float()
        vocab = logits.shape[-1]
        new_choices: list[tuple[_Choice, RowRef]] = []
        outputs: list[ChoiceOutput] = []
        for row, request in enumerate(batch):
            for index in range(request.n):
                choice = _Choice(request, index, ChoiceSampler(request.sampling, index, vocab),
                                 TextStream(self.tokenizer.decode, request.sampling.stop),
                                 self.grammars.constraint_for(request))
                row_logits = logits[row:row + 1]
                if choice.constraint is not None:
                    row_logits = row_logits.clone()  # the request's other choices sample from this row too
                    apply_masks(row_logits, [choice.constraint])
                output = self._accept(choice, choice.sampler.sample(row_logits[0]))
                outputs.append(output)
                if output.finish_reason is None:
                    new_choices.append((choice, RowRef(cache, row)))
        survivors = [RowRef(self._cache, i) for i in range(len(self._choices))]
        self._cache = BatchCache.gather(survivors + [ref for _, ref in new_choices], self._num_layers)
        self._choices = self._choices + [choice for choice, _ in new_choices]
        return outputs

    def _decode(self) -> list[ChoiceOutput]:
        cache = self._cache
        tokens = torch.tensor([[c.next_token] for c in self._choices], dtype=torch.long)
        mask, positions = cache.decode_inputs()
        out = self.model(input_ids=tokens, attention_mask=mask, position_ids=positions, cache=cache,
                         use_cache=True)
        cache.advance()
        logits = out.logits[:, -1].float()
        apply_masks(logits, [c.constraint for c in self._choices])
        outputs = [self._accept(choice, choice.sampler.sample(logits[row]))
                   for row, choice in enumerate(self._choices)]
        if any(o.finish_reason is not None for o in outputs):
            self._keep([c for c, o in zip(self._choices, outputs) if o.finish_reason is None])
        return outputs

    def _accept(self, choice: _Choice, token: int) -> ChoiceOutput:
        """Apply a sampled token to its choice: text to emit, and whether the choice has ended."""
        choice.generated += 1
        request_id, index = choice.request.request_id, choice.index
        if token in self._stop_ids:
            return ChoiceOutput(request_id, index, choice.stream.finish(), 1, "stop")
        text, stopped = choice.stream.push(token)
        if stopped:
            return ChoiceOutput(request_id, index, text, 1, "stop")
        if choice.constraint is not None:
            choice.constraint.observe(token, text)
            if choice.constraint.complete:  # the grammar allows nothing more (not even more whitespace)
                return ChoiceOutput(request_id, index, text + choice.stream.finish(), 1, "stop")
        if choice.generated >= choice.request.sampling.max_tokens:
            return ChoiceOutput(request_id, index, text + choice.stream.finish(), 1, "length")
        choice.sampler.observe(token)
        choice.next_token = token
        return ChoiceOutput(request_id, index, text, 1, None)

    def _keep(self, choices: list[_Choice]) -> None:
        """Shrink the batch to `choices` (which must be in batch order)."""
        rows = {id(c): row for row, c in enumerate(self._choices)}
        refs = [RowRef(self._cache, rows[id(c)]) for c in choices]
        self._cache = BatchCache.gather(refs, self._num_layers) if choices else None
        self._choices = choices
