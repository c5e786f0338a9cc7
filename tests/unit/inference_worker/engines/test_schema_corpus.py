"""The schema corpus with the real model: every supported schema, enforced with `strict`, gives JSON
that validates (checked with the `jsonschema` package); the unsupported ones are refused by keyword."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from broker.contracts import SamplingParams
from inference_worker.engines.base import Engine, EngineRequest
from inference_worker.engines.llamacpp import LlamaCppEngine
from inference_worker.engines.transformers_cpu import TransformersEngine
from shared.grammars import GrammarError, json_schema_grammar
from shared.settings import Settings

CORPUS = json.loads((Path(__file__).parents[3] / "data" / "schema_corpus.json").read_text())
MAX_TOKENS = 256  # every corpus schema bounds its strings, arrays and numbers well below this
MAX_STEPS = 2 * MAX_TOKENS


def prompt(description: str, schema: dict) -> list[dict]:
    return [{"role": "user", "content": f"Reply with JSON for {description}, following this schema: "
                                        f"{json.dumps(schema)}"}]


@pytest.fixture(scope="module", params=[LlamaCppEngine, TransformersEngine], ids=["llamacpp", "transformers"])
def engine(request, default_spec, chat_tokenizer) -> Engine:
    """Each CPU engine in turn: both apply the same grammars through inference_worker/constraints.py."""
    settings = Settings.from_env({}, torch_threads=1, llamacpp_threads=1, max_batch_size=len(CORPUS["supported"]))
    engine = request.param(default_spec, settings, chat_tokenizer)
    engine.load()
    return engine


def test_corpus_is_large_and_varied():
    assert len(CORPUS["supported"]) >= 40
    text = json.dumps(CORPUS["supported"])
    for keyword in ("$ref", "$defs", "anyOf", "enum", "pattern", "minItems", "maxItems", "minimum", "maximum"):
        assert keyword in text, keyword


def test_every_supported_schema_is_obeyed_with_the_real_model(engine, chat_tokenizer):
    entries = CORPUS["supported"]
    for number, entry in enumerate(entries):
        engine.add(EngineRequest(f"schema-{number}", chat_tokenizer.prompt_ids(prompt(entry["description"],
                                                                                      entry["schema"])),
                                 SamplingParams(temperature=0.7, max_tokens=MAX_TOKENS, seed=number), 1,
                                 grammar=json_schema_grammar(entry["schema"], strict=True)))
    texts = {f"schema-{n}": "" for n in range(len(entries))}
    finished: dict[str, str] = {}
    for _ in range(MAX_STEPS):
        if not engine.has_work:
            break
        for output in engine.step():
            texts[output.request_id] += output.text
            if output.finish_reason:
                finished[output.request_id] = output.finish_reason
    failures = []
    for number, entry in enumerate(entries):
        request_id = f"schema-{number}"
        try:
            assert finished.get(request_id) == "stop", f"finish_reason {finished.get(request_id)}"
            jsonschema.validate(json.loads(texts[request_id]), entry["schema"])
        except (AssertionError, ValueError, jsonschema.ValidationError) as exc:
            failures.append(f"{entry['description']}: {exc} in {texts[request_id]!r}")
    assert not failures, f"{len(failures)} of {len(entries)} schemas not obeyed:\n" + "\n".join(failures)


@pytest.mark.parametrize("entry", CORPUS["unsupported"], ids=lambda e: e["description"])
def test_unsupported_schemas_are_refused_naming_the_keyword(entry):
    with pytest.raises(GrammarError) as caught:
        json_schema_grammar(entry["schema"], strict=True)
    assert caught.value.keywords and all(k in json.dumps(entry["schema"]) for k in caught.value.keywords)
