"""Constrained decoding: per-choice token masks from llguidance.

A GrammarCompiler belongs to one engine (one tokenizer). It compiles each distinct grammar once,
keyed by its hash, and hands every constrained choice its own copy of the compiled matcher. A
TokenConstraint then says, before each sampling step, which tokens may come next, and follows
the tokens actually chosen.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import OrderedDict
from typing import Iterable, Optional

import llguidance
import llguidance.torch
import torch
from llguidance import LLMatcher, LLTokenizer

log = logging.getLogger(__name__)

COMPILED_GRAMMARS_KEPT = 256


class GrammarCompiler:
    """Compiles grammars for one tokenizer, and caches them by hash."""

    def __init__(self, tokenizer_json: str, vocab_size: int, stop_ids: Iterable[int]):
        stops = sorted(stop_ids)
        self.vocab_size = vocab_size
        self.tokenizer = LLTokenizer(tokenizer_json, n_vocab=vocab_size, eos_token=stops or None)
        self._compiled: OrderedDict[str, LLMatcher] = OrderedDict()
        self.compile_seconds: list[float] = []  # for the benchmark: one entry per cache miss

    def constraint(self, grammar: str, after: Optional[str] = None) -> "TokenConstraint":
        """A fresh constraint for one choice; raises ValueError for a grammar that does not compile.
        With `after`, the constraint starts only once that text has been generated (a reasoning
        model's end-of-thinking marker: the grammar governs the answer, not the thinking)."""
        return TokenConstraint(self._compile(grammar).deep_copy(), after)

    def constraint_for(self, request) -> Optional["TokenConstraint"]:
        """A choice's constraint for an EngineRequest, or None when it asks for none. Engines also
        call it when a request arrives, so a grammar that does not compile fails there, at once."""
        if request.grammar is None:
            return None
        return self.constraint(request.grammar, after=request.grammar_after)

    def _compile(self, grammar: str) -> LLMatcher:
        key = hashlib.sha256(grammar.encode()).hexdigest()
        matcher = self._compiled.get(key)
        if matcher is not None:
            self._compiled.move_to_end(key)
            return matcher
        started = time.perf_counter()
        matcher = LLMatcher(self.tokenizer, grammar, log_level=0)
        if matcher.is_error():
            raise ValueError(f"the output grammar does not compile: {matcher.get_error()}")
        # Warm the first mask: llguidance builds lexer states lazily, and the first is the costliest.
        matcher.compute_bitmask()
        self.compile_seconds.append(time.perf_counter() - started)
        self._compiled[key] = matcher
        if len(self._compiled) > COMPILED_GRAMMARS_KEPT:
            self._compiled.popitem(last=False)
        return matcher


class TokenConstraint:
    """The grammar state of one choice."""

    def __init__(self, matcher: LLMatcher, after: Optional[str] = None):
        self._matcher = matcher
        self._waiting_for = after
        self._seen = ""

    @property
    def active(self) -> bool:
        return self._waiting_for is None

    def fill_mask(self, bitmask: torch.Tensor, row: int) -> None:
        """Write the allowed next tokens into `bitmask[row]` (llguidance's packed int32 layout);
        every token while the constraint has not started (a reasoning model still thinking)."""
        if not self.active:
            bitmask[row].fill_(-1)
            return
        llguidance.torch.fill_next_token_bitmask(self._matcher, bitmask, row)

    def observe(self, token: int, text: str) -> None:
        """Follow the token the choice took (and the text it produced, to notice the start marker)."""
        if not self.active:
            self._seen += text
            if self._waiting_for in self._seen:
                self._waiting_for = None
            return
        if not self._matcher.consume_token(token):
            log.error("a constrained choice took a token its grammar forbids",
                      extra={"token": token, "error": self._matcher.get_error()})

    @property
    def complete(self) -> bool:
        """The grammar allows nothing more: the choice is done."""
        return self.active and self._matcher.is_stopped()


def apply_masks(logits: torch.Tensor, constraints: list[Optional[TokenConstraint]]) -> None:
    """Forbid, in place, every token the constrained rows' grammars do not allow next."""
    rows = [(row, c) for row, c in enumerate(constraints) if c is not None and c.active]
    if not rows:
        return
    bitmask = llguidance.torch.allocate_token_bitmask(logits.shape[0], logits.shape[1])
    for row, constraint in rows:
        constraint.fill_mask(bitmask, row)
    llguidance.torch.apply_token_bitmask_inplace(logits, bitmask)
