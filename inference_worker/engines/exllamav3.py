"""The ExLlamaV3 engine: LlamaGate's default GPU engine.

ExLlamaV3's generator pages its KV cache and batches every running job (continuous batching)
with its own Triton paged-attention kernels, so it needs no flash-attn. It loads EXL3-quantized
models and unquantized HF safetensors (FP16/BF16) alike. Structured output goes through a
filter that wraps LlamaGate's own llguidance constraint, the same one the CPU engines use.
Vision models (Gemma 3, Qwen2.5-VL) take images through the model's own vision encoder
(exllamav3_vision.py).
"""

from __future__ import annotations

import functools
import logging
import time

import torch

from inference_worker.constraints import TokenConstraint
from inference_worker.engines.base import EngineRequest
from inference_worker.engines.exllamav3_vision import ExLlamaV3Vision
from inference_worker.engines.gpu import require_cuda
from inference_worker.engines.paged_generator import PagedGeneratorEngine

log = logging.getLogger(__name__)


class ExLlamaV3Engine(PagedGeneratorEngine):
    name = "exllamav3"
    accepts_images = True  # for the architectures in shared.registry.VISION_MODEL_TYPES
    vision: ExLlamaV3Vision | None

    def load(self) -> None:
        require_cuda(self.name, "exllamav3")
        import exllamav3

        directory = self.spec.weights.resolve()
        if self.spec.weights.format != "hf":
            raise ValueError(f"the exllamav3 engine loads HF-format or EXL3 directories; {self.spec.id!r} has "
                             f"{self.spec.weights.format!r} weights (convert GGUF with "
                             f"`python -m inference_worker.convert_gguf`)")
        started = time.monotonic()
        config = exllamav3.Config.from_directory(str(directory))
        model = exllamav3.Model.from_config(config)
        # The cache must exist before the weights load (they are allocated together).
        self.cache_capacity = self.size_cache(directory)
        cache = exllamav3.Cache(model, max_num_tokens=self.cache_capacity)
        model.load()
        self.library_tokenizer = exllamav3.Tokenizer.from_config(config)
        self.generator = exllamav3.Generator(model=model, cache=cache, tokenizer=self.library_tokenizer,
                                             max_batch_size=self.max_sequences,
                                             max_chunk_size=self.settings.gpu_prefill_chunk_tokens)
        eos = {self.tokenizer.eos_token_id, *config.eos_token_id_list} - {None}
        self.stop_token_ids = sorted(eos)
        self._check_paged_attention()
        self.make_grammar_compiler(config.vocab_size)
        self._pieces = self.library_tokenizer.get_id_to_piece_list(True)
        if self.spec.supports("vision"):
            self.vision = ExLlamaV3Vision.load(config, directory, self.tokenizer, self.library_tokenizer)
        log.info("model loaded", extra={"model": self.spec.id, "engine": self.name,
                                        "seconds": round(time.monotonic() - started, 1),
                                        "cache_tokens": self.cache_capacity, "max_batch_size": self.max_sequences,
                                        "gpu": torch.cuda.get_device_name()})

    def _check_paged_attention(self) -> None:
        """Run two short jobs together once: a generator that cannot batch fails here, at start-up,
        instead of serving one sequence at a time."""
        from exllamav3 import Job
        from exllamav3.generator.sampler import ArgmaxSampler

        jobs = [Job(input_ids=torch.tensor([[self.stop_token_ids[0] if self.stop_token_ids else 0] * 4]),
                    max_new_tokens=2, sampler=ArgmaxSampler(), identifier=i) for i in range(2)]
        self.generator.enqueue(jobs)
        most_active = 0
        while self.generator.num_remaining_jobs():
            self.generator.iterate()
            most_active = max(most_active, len(self.generator.active_jobs))
        if most_active < 2:
            raise RuntimeError("the ExLlamaV3 generator ran two jobs one after the other: paged attention is not "
                               "working on this GPU, and a worker must not serve one sequence at a time")

    def prepared(self, request: EngineRequest) -> EngineRequest:
        if request.model_inputs.get("images"):
            return self.vision.encoded(request)  # on the loop's thread, like every GPU call
        return request

    def _new_job(self, request: EngineRequest, index: int, constraint: TokenConstraint | None):
        from exllamav3 import Job
        from exllamav3.generator.sampler import ArgmaxSampler, ComboSampler

        sampling = request.sampling
        if sampling.greedy and not (sampling.presence_penalty or sampling.frequency_penalty):
            sampler = ArgmaxSampler()  # one kernel instead of a chain of no-op steps
        else:
            sampler = ComboSampler(temperature=sampling.temperature, top_p=sampling.top_p,
                                   pres_p=sampling.presence_penalty, freq_p=sampling.frequency_penalty)
        filters = [_constraint_filter_class()(self.library_tokenizer, constraint, self._pieces,
                                              self.grammars.vocab_size)] if constraint is not None else None
        return Job(input_ids=torch.tensor([request.prompt_ids], dtype=torch.long),
                   max_new_tokens=sampling.max_tokens, sampler=sampler, seed=self.seed_for(request, index),
                   stop_conditions=self.stop_conditions(request), filters=filters,
                   embeddings=list(request.model_inputs.get("embeddings", ())) or None,
                   identifier=(request.request_id, index))


@functools.cache
def _constraint_filter_class():
    """The filter class, built on first use: exllamav3 is imported only on GPU machines."""
    from exllamav3 import Filter
    import llguidance.torch

    class _ConstraintFilter(Filter):
        """An ExLlamaV3 filter over LlamaGate's TokenConstraint (llguidance, compiled and cached
        by the engine's GrammarCompiler). Completing the grammar ends the job."""

        def __init__(self, tokenizer, constraint: TokenConstraint, pieces: list[str], vocab_size: int):
            super().__init__(tokenizer, trigger_token=None, prefix_str=None, eos_after_completed=True)
            self.constraint = constraint
            self.pieces = pieces
            self.bitmask = llguidance.torch.allocate_token_bitmask(1, vocab_size)

        def reset(self):
            pass  # one filter per choice, never reused

        def accept_token(self, token: int):
            self.constraint.observe(token, self.pieces[token] if token < len(self.pieces) else "")

        def get_next_logit_mask(self) -> torch.Tensor:
            self.constraint.fill_mask(self.bitmask, 0)
            return self.bitmask

        def is_completed(self) -> bool:
            return self.constraint.complete

    return _ConstraintFilter
