"""Token masks from grammars, with the real tokenizer: whatever the logits say, the text follows the grammar."""

from __future__ import annotations

import json

import jsonschema
import pytest
import torch

from inference_worker.constraints import GrammarCompiler, apply_masks
from shared.grammars import json_schema_grammar

SCHEMA = {"type": "object", "properties": {
    "name": {"type": "string", "maxLength": 8},
    "size": {"type": "integer", "minimum": 1, "maximum": 9},
    "tags": {"type": "array", "items": {"enum": ["a", "b"]}, "maxItems": 2}},
    "required": ["name", "size", "tags"], "additionalProperties": False}
VOCAB = 49152  # SmolLM2's logits width


@pytest.fixture(scope="module")
def compiler(chat_tokenizer):
    return GrammarCompiler(chat_tokenizer.to_json(), VOCAB, {chat_tokenizer.eos_token_id})


def run(compiler, chat_tokenizer, constraints, seed: int, steps: int = 120) -> list[list[int]]:
    """Sample random logits for each row under the constraints; each row's tokens until its grammar ends."""
    generator = torch.Generator().manual_seed(seed)
    tokens: list[list[int]] = [[] for _ in constraints]
    done = [False] * len(constraints)
    for _ in range(steps):
        logits = torch.randn(len(constraints), VOCAB, generator=generator)
        apply_masks(logits, constraints)
        for row, constraint in enumerate(constraints):
            if done[row]:
                continue
            token = int(torch.argmax(logits[row]))
            if token == chat_tokenizer.eos_token_id:
                done[row] = True
                continue
            tokens[row].append(token)
            if constraint is not None:
                constraint.observe(token, chat_tokenizer.decode([token]))
                done[row] = constraint.complete
        if all(done):
            break
    return tokens


@pytest.mark.parametrize("seed", range(5))
def test_random_logits_under_a_schema_give_valid_json(compiler, chat_tokenizer, seed):
    grammar = json_schema_grammar(SCHEMA, strict=True)
    tokens = run(compiler, chat_tokenizer, [compiler.constraint(grammar), None], seed)
    jsonschema.validate(json.loads(chat_tokenizer.decode(tokens[0])), SCHEMA)
    assert len(tokens[1]) == 120  # the unconstrained row was left alone (it never stopped)


def test_a_grammar_is_compiled_once(chat_tokenizer):
    compiler = GrammarCompiler(chat_tokenizer.to_json(), VOCAB, {chat_tokenizer.eos_token_id})
    grammar = json_schema_grammar({"type": "object", "properties": {"q": {"type": "boolean"}}}, strict=True)
    compiler.constraint(grammar)
    compiler.constraint(grammar)
    assert len(compiler.compile_seconds) == 1
    compiler.constraint(json_schema_grammar({"type": "array"}, strict=True))
    assert len(compiler.compile_seconds) == 2


def test_a_grammar_that_does_not_compile_is_a_value_error(compiler):
    with pytest.raises(ValueError):
        compiler.constraint('{"grammars": [{"lark_grammar": "start: undefined_rule"}]}')


def test_constraint_waits_for_its_start_marker(compiler, chat_tokenizer):
    constraint = compiler.constraint(json_schema_grammar(SCHEMA, strict=True), after="</think>")
    logits = torch.zeros(1, VOCAB)
    apply_masks(logits, [constraint])
    assert torch.isfinite(logits).all()  # thinking is free
    for token in chat_tokenizer.encode("Hmm.</think>"):
        constraint.observe(token, chat_tokenizer.decode([token]))
    assert constraint.active
    apply_masks(logits, [constraint])
    allowed = [i for i in range(VOCAB) if torch.isfinite(logits[0, i])]
    assert allowed and all(chat_tokenizer.decode([i]).strip()[:1] in ("{", "") for i in allowed)
