"""The parts of llama-cpp-python's low-level API the llama.cpp engine (and its benchmark) use.

Loading a GGUF file into one context that holds many sequences, filling a `llama_batch`, and
building a per-choice sampler chain. Everything here is called from the one thread that owns
the context: llama.cpp contexts are not thread-safe.
"""

from __future__ import annotations

import ctypes
import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import llama_cpp
import numpy as np
import torch

from broker.contracts import SamplingParams
from inference_worker.constraints import TokenConstraint, apply_masks

log = logging.getLogger(__name__)

# llama.cpp log levels (ggml_log_level): what its loader says at INFO is noise in our logs.
_LOG_LEVELS = {3: logging.WARNING, 4: logging.ERROR}
_DEFAULT_SEED = 0xFFFFFFFF  # LLAMA_DEFAULT_SEED: llama.cpp treats it as "pick a random seed"


@llama_cpp.llama_log_callback
def _forward_log(level: int, text: bytes, _user_data) -> None:
    python_level = _LOG_LEVELS.get(level)
    if python_level is not None and text:
        log.log(python_level, "llama.cpp: %s", text.decode("utf-8", "replace").rstrip())


_backend_ready = False


def init_backend() -> None:
    """Once per process: route llama.cpp's logging to ours and initialise its backends."""
    global _backend_ready
    if not _backend_ready:
        llama_cpp.llama_log_set(_forward_log, ctypes.c_void_p(0))
        llama_cpp.llama_backend_init()
        _backend_ready = True


@dataclass(frozen=True)
class ContextConfig:
    kv_tokens: int  # KV cache cells shared by all sequences
    max_sequences: int  # sequence ids 0 .. max_sequences-1
    batch_tokens: int  # the most tokens one llama_decode takes
    threads: int


class LlamaContext:
    """One GGUF model and one llama.cpp context with a unified KV cache for many sequences."""

    def __init__(self, path: Path, config: ContextConfig):
        init_backend()
        self.config = config
        model_params = llama_cpp.llama_model_default_params()
        model_params.n_gpu_layers = 0
        self.model = llama_cpp.llama_model_load_from_file(str(path).encode(), model_params)
        if not self.model:
            raise RuntimeError(f"llama.cpp could not load {path}")
        self.vocab = llama_cpp.llama_model_get_vocab(self.model)
        self.vocab_size = llama_cpp.llama_vocab_n_tokens(self.vocab)
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = config.kv_tokens
        params.n_batch = params.n_ubatch = config.batch_tokens
        params.n_seq_max = config.max_sequences
        params.n_threads = params.n_threads_batch = config.threads
        # One KV buffer for all sequences: a sequence may use any free cell, so the cache needs no
        # per-sequence slice of the full context length, and the choices of one request share
        # their prompt's cells.
        params.kv_unified = True
        params.no_perf = True
        self.ctx = llama_cpp.llama_init_from_model(self.model, params)
        if not self.ctx:
            llama_cpp.llama_model_free(self.model)
            raise RuntimeError("llama.cpp could not create a context (out of memory?)")
        self.memory = llama_cpp.llama_get_memory(self.ctx)
        self.batch = Batch(config.batch_tokens, config.max_sequences)

    def is_end_of_generation(self, token: int) -> bool:
        return bool(llama_cpp.llama_vocab_is_eog(self.vocab, token))

    def decode(self) -> None:
        """Run the filled batch; raises if llama.cpp refuses it."""
        status = llama_cpp.llama_decode(self.ctx, self.batch.native)
        if status != 0:
            # 1: no KV cells left for the batch; < 0: an error. Either way the batch was not run.
            raise RuntimeError(f"llama_decode failed with status {status} "
                               f"({self.batch.size} tokens in the batch)")

    def forget(self, seq_id: int) -> None:
        """Drop a sequence's cells from the KV cache (shared prompt cells stay while others use them)."""
        llama_cpp.llama_memory_seq_rm(self.memory, seq_id, -1, -1)

    def mask_logits(self, row: int, constraint: TokenConstraint) -> None:
        """Apply a grammar's mask, in place, to the logits llama.cpp holds for batch row `row`."""
        pointer = llama_cpp.llama_get_logits_ith(self.ctx, row)
        logits = torch.from_numpy(np.ctypeslib.as_array(pointer, shape=(self.vocab_size,)))  # no copy
        apply_masks(logits.unsqueeze(0), [constraint])

    def sample(self, sampler: "Sampler", row: int) -> int:
        """Sample (and record, for penalties) a token from the logits of batch row `row`."""
        return llama_cpp.llama_sampler_sample(sampler.chain, self.ctx, row)

    def close(self) -> None:
        self.batch.close()
        if self.ctx:
            llama_cpp.llama_free(self.ctx)
            self.ctx = None
        if self.model:
            llama_cpp.llama_model_free(self.model)
            self.model = None


class Batch:
    """A reusable `llama_batch`: tokens with their position, sequence ids and whether to keep logits."""

    def __init__(self, capacity: int, max_sequences: int):
        self.capacity = capacity
        self.native = llama_cpp.llama_batch_init(capacity, 0, max_sequences)
        self.size = 0

    def clear(self) -> None:
        self.size = 0
        self.native.n_tokens = 0

    def add(self, token: int, position: int, seq_ids: Sequence[int], logits: bool) -> int:
        """Append one token; returns its row (the index to sample its logits from)."""
        row = self.size
        native = self.native
        native.token[row] = token
        native.pos[row] = position
        native.n_seq_id[row] = len(seq_ids)
        seq_id = native.seq_id[row]
        for i, value in enumerate(seq_ids):
            seq_id[i] = value
        native.logits[row] = logits
        self.size = row + 1
        native.n_tokens = self.size
        return row

    @property
    def room(self) -> int:
        return self.capacity - self.size

    def close(self) -> None:
        if self.native is not None:
            llama_cpp.llama_batch_free(self.native)
            self.native = None


class Sampler:
    """One choice's sampler chain: OpenAI penalties, then temperature, top_p and a seeded draw.

    The penalties count only the tokens this chain sampled (the completion, not the prompt), as
    OpenAI defines them and as the transformers engine does.
    """

    def __init__(self, params: SamplingParams, index: int, vocab_size: int):
        chain_params = llama_cpp.llama_sampler_chain_default_params()
        chain_params.no_perf = True
        self.chain = llama_cpp.llama_sampler_chain_init(chain_params)
        add = lambda sampler: llama_cpp.llama_sampler_chain_add(self.chain, sampler)  # noqa: E731
        if params.presence_penalty != 0.0 or params.frequency_penalty != 0.0:
            add(llama_cpp.llama_sampler_init_penalties(vocab_size, params.max_tokens, 1.0,
                                                       params.frequency_penalty, params.presence_penalty))
        if params.greedy:
            add(llama_cpp.llama_sampler_init_greedy())
            return
        add(llama_cpp.llama_sampler_init_temp(params.temperature))
        if params.top_p < 1.0:
            add(llama_cpp.llama_sampler_init_top_p(params.top_p, 1))
        add(llama_cpp.llama_sampler_init_dist(choice_seed(params.seed, index)))

    def close(self) -> None:
        if self.chain:
            llama_cpp.llama_sampler_free(self.chain)  # frees the samplers added to the chain too
            self.chain = None


def choice_seed(seed: int | None, index: int) -> int:
    """The 32-bit seed of one choice: fixed for a seeded request, a fresh random one otherwise.

    Mixing (rather than seed + index) keeps seed 5's second choice unlike seed 6's first.
    """
    if seed is None:
        value = secrets.randbits(32)
    else:
        value = ((seed * 0x9E3779B97F4A7C15 + index * 0xBF58476D1CE4E5B9) >> 16) & 0xFFFFFFFF
    return value if value != _DEFAULT_SEED else _DEFAULT_SEED - 1


def default_threads() -> int:
    """One thread per core this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1
