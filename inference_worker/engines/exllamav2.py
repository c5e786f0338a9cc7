"""The ExLlamaV2 engine: ExLlamaV2's dynamic generator, for EXL2-quantized and FP16 models.

ExLlamaV2 batches (paged attention, continuous batching) only when flash-attn >= 2.5.7 is
installed; without it its generator runs one sequence at a time. A GPU worker that silently
served one request at a time would look healthy and be 20-60x slower, so this engine refuses to
start without paged attention unless the operator says LLAMAGATE_EXLLAMAV2_ALLOW_UNBATCHED=1.
ExLlamaV2 is no longer developed (0.3.2 is its last release); ExLlamaV3 is the default GPU engine.
"""

from __future__ import annotations

import functools
import logging
import time

import torch

from inference_worker.constraints import TokenConstraint
from inference_worker.engines.base import EngineRequest
from inference_worker.engines.gpu import GpuUnavailableError, require_cuda
from inference_worker.engines.paged_generator import PagedGeneratorEngine

log = logging.getLogger(__name__)


class ExLlamaV2Engine(PagedGeneratorEngine):
    name = "exllamav2"

    def load(self) -> None:
        require_cuda(self.name, "exllamav2")
        from exllamav2 import ExLlamaV2, ExLlamaV2Cache, ExLlamaV2Config, ExLlamaV2Tokenizer
        from exllamav2 import attn as exllamav2_attn
        from exllamav2.generator import ExLlamaV2DynamicGenerator

        paged = exllamav2_attn.has_flash_attn_with_paged
        if not paged and not self.settings.exllamav2_allow_unbatched:
            raise GpuUnavailableError(
                "ExLlamaV2 batches requests only with flash-attn >= 2.5.7, which is not installed: this worker "
                "would run one sequence at a time. Install flash-attn (built for this GPU and PyTorch), or "
                "serve the model with the exllamav3 engine, or set LLAMAGATE_EXLLAMAV2_ALLOW_UNBATCHED=1 to "
                "accept one sequence at a time.")
        directory = self.spec.weights.resolve()
        started = time.monotonic()
        config = ExLlamaV2Config(str(directory))
        config.max_seq_len = self.spec.context_length
        chunk = self.settings.gpu_prefill_chunk_tokens
        config.max_input_len = chunk
        config.max_attention_size = chunk ** 2
        model = ExLlamaV2(config)
        if paged:
            self.cache_capacity = self.size_cache(directory)
        else:
            # Unpaged: one sequence, in a cache exactly as long as the context.
            self.max_sequences = 1
            self.page_size = self.spec.context_length
            self.cache_capacity = self.spec.context_length
            log.warning("ExLlamaV2 without flash-attn: serving ONE sequence at a time, as configured",
                        extra={"model": self.spec.id})
        cache = ExLlamaV2Cache(model, max_seq_len=self.cache_capacity, lazy=True)
        model.load_autosplit(cache)
        self.library_tokenizer = ExLlamaV2Tokenizer(config)
        self.generator = ExLlamaV2DynamicGenerator(model=model, cache=cache, tokenizer=self.library_tokenizer,
                                                   max_batch_size=self.max_sequences, max_chunk_size=chunk,
                                                   paged=paged)
        self.model = model
        eos = {self.tokenizer.eos_token_id, self.library_tokenizer.eos_token_id} - {None}
        self.stop_token_ids = sorted(eos)
        self.make_grammar_compiler(config.vocab_size)
        self._pieces = self.library_tokenizer.get_id_to_piece_list(True)
        log.info("model loaded", extra={"model": self.spec.id, "engine": self.name, "paged": paged,
                                        "seconds": round(time.monotonic() - started, 1),
                                        "cache_tokens": self.cache_capacity, "max_batch_size": self.max_sequences,
                                        "gpu": torch.cuda.get_device_name()})

    def _new_job(self, request: EngineRequest, index: int, constraint: TokenConstraint | None):
        from exllamav2.generator import ExLlamaV2DynamicJob, ExLlamaV2Sampler

        sampling = request.sampling
        if sampling.greedy:
            settings = ExLlamaV2Sampler.Settings.greedy()
        else:
            settings = ExLlamaV2Sampler.Settings(temperature=sampling.temperature, top_p=sampling.top_p,
                                                 top_k=0, token_repetition_penalty=1.0)
        settings.token_presence_penalty = sampling.presence_penalty
        settings.token_frequency_penalty = sampling.frequency_penalty
        filters = [_constraint_filter_class()(self.model, self.library_tokenizer, constraint, self._pieces,
                                              self.grammars.vocab_size)] if constraint is not None else []
        return ExLlamaV2DynamicJob(input_ids=torch.tensor([request.prompt_ids], dtype=torch.long),
                                   max_new_tokens=sampling.max_tokens, gen_settings=settings,
                                   seed=self.seed_for(request, index), stop_conditions=self.stop_conditions(request),
                                   filters=filters, identifier=(request.request_id, index))


@functools.cache
def _constraint_filter_class():
    """ExLlamaV2 has no llguidance filter: this one masks logits with LlamaGate's TokenConstraint.
    Once the grammar is complete its mask allows only end-of-sequence, which ends the job."""
    import llguidance.torch
    from exllamav2.generator.filters import ExLlamaV2Filter

    class _ConstraintFilter(ExLlamaV2Filter):
        def __init__(self, model, tokenizer, constraint: TokenConstraint, pieces: list[str], vocab_size: int):
            super().__init__(model, tokenizer)
            self.constraint = constraint
            self.pieces = pieces
            self.vocab_size = vocab_size
            self.bitmask = llguidance.torch.allocate_token_bitmask(1, vocab_size)

        def clone(self, c=None):
            raise NotImplementedError("a constraint filter belongs to one job")

        def begin(self, prefix_str):
            pass

        def feed(self, token):
            token = int(token)
            self.constraint.observe(token, self.pieces[token] if token < len(self.pieces) else "")

        # Both True: the generator then only ever asks for a precomputed logit mask (never `next()`),
        # computed on its filter thread while the GPU runs the forward pass.
        def use_background_worker(self) -> bool:
            return True

        def can_mask_logits(self) -> bool:
            return True

        def prepare_logit_mask(self) -> bool:
            self.constraint.fill_mask(self.bitmask, 0)
            return True

        def mask_logits(self, logits: torch.Tensor) -> torch.Tensor:
            head = logits[:self.vocab_size].view(1, -1)
            llguidance.torch.apply_token_bitmask_inplace(head, self.bitmask)
            logits[self.vocab_size:] = float("-inf")  # padding rows of the output layer
            return logits

    return _ConstraintFilter
