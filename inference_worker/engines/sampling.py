"""Per-choice sampling: every request in a batch keeps its own temperature, top_p, penalties and seed."""

from __future__ import annotations

import secrets

import torch

from broker.contracts import SamplingParams


class ChoiceSampler:
    """Picks the next token of one choice from its row of logits."""

    def __init__(self, params: SamplingParams, index: int, vocab_size: int):
        self.params = params
        self.generator = torch.Generator()
        # A seeded request gets the same tokens on every run, and each of its choices its own
        # stream; mixing (rather than seed + index) keeps seed 5's second choice unlike seed 6's first.
        if params.seed is None:
            seed = secrets.randbits(63)
        else:
            seed = (params.seed * 0x9E3779B97F4A7C15 + index * 0xBF58476D1CE4E5B9) % (2**63)
        self.generator.manual_seed(seed)
        penalised = params.presence_penalty != 0.0 or params.frequency_penalty != 0.0
        # Penalties apply to the tokens generated so far, as in OpenAI's definition.
        self.counts = torch.zeros(vocab_size) if penalised else None

    def sample(self, logits: torch.Tensor) -> int:
        params = self.params
        if self.counts is not None:
            logits = (logits - params.frequency_penalty * self.counts
                      - params.presence_penalty * (self.counts > 0).to(logits.dtype))
        if params.greedy:
            return int(torch.argmax(logits))
        logits = logits / params.temperature
        if params.top_p < 1.0:
            sorted_logits, order = torch.sort(logits, descending=True)
            probs = torch.softmax(sorted_logits, dim=-1)
            # Drop tokens outside the smallest set whose mass reaches top_p (always keep the best one).
            outside = (torch.cumsum(probs, dim=-1) - probs) > params.top_p
            sorted_logits = sorted_logits.masked_fill(outside, float("-inf"))
            choice = torch.multinomial(torch.softmax(sorted_logits, dim=-1), 1, generator=self.generator)
            return int(order[choice])
        probs = torch.softmax(logits, dim=-1)
        return int(torch.multinomial(probs, 1, generator=self.generator))

    def observe(self, token: int) -> None:
        if self.counts is not None and token < self.counts.shape[0]:
            self.counts[token] += 1
