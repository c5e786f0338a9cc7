"""Benchmark: what constrained decoding costs. Tokens/s of the real CPU model with and without a
JSON Schema constraint, at concurrency 1 and 8 (goal: under 10% slower), the per-token cost of the
masks, and grammar compile times over the schema corpus (median, max).

Runs the engine in-process (no stack: nothing but the model and llguidance is measured). The
constrained and plain runs alternate, `--rounds` times each, and the medians are compared, so that
load from other processes on the machine hits both alike. Every request asks for `--max-tokens`
tokens of a long story; the constrained ones must write it as {"lines": [...]} with more lines than
any request can reach, so both kinds generate (nearly) the same number of tokens.

    .venv/bin/python -m bench.structured
    .venv/bin/python -m bench.structured --rounds 1 --max-tokens 32   # a quick smoke run
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Optional

if __package__ in (None, ""):  # run as `python bench/structured.py`: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.report import describe_load, host_load, print_json_line, print_table
from broker.contracts import SamplingParams
from inference_worker import constraints
from inference_worker.engines import llamacpp_runtime, transformers_cpu
from inference_worker.engines.base import EngineRequest
from inference_worker.engines.llamacpp import LlamaCppEngine
from inference_worker.engines.transformers_cpu import TransformersEngine
from shared.chat_tokenizer import ChatTokenizer
from shared.grammars import json_schema_grammar
from shared.registry import ModelRegistry
from shared.settings import Settings
from shared.tokenizer_cache import prepare_tokenizer

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "tests" / "data" / "schema_corpus.json"
PROMPT = [{"role": "user", "content": "Write a long story about a lighthouse keeper, as JSON with a key 'lines'."}]
# At least 50 lines of story: more tokens than any request here asks for, so none ends early.
STORY_SCHEMA = {"type": "object", "properties": {"lines": {
    "type": "array", "items": {"type": "string", "maxLength": 80}, "minItems": 50}},
    "required": ["lines"], "additionalProperties": False}
GOAL_SLOWDOWN = 0.10
ENGINES = {"transformers": TransformersEngine, "llamacpp": LlamaCppEngine}


class MaskTimer:
    """Wall time spent computing and applying masks and following the chosen tokens."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.tokens = 0

    def install(self) -> None:
        apply_masks, observe = constraints.apply_masks, constraints.TokenConstraint.observe

        def timed_apply(logits, rows):
            started = time.perf_counter()
            apply_masks(logits, rows)
            self.seconds += time.perf_counter() - started
            self.tokens += sum(1 for r in rows if r is not None)

        def timed_observe(constraint, token, text):
            started = time.perf_counter()
            observe(constraint, token, text)
            self.seconds += time.perf_counter() - started

        transformers_cpu.apply_masks = timed_apply
        llamacpp_runtime.apply_masks = timed_apply
        constraints.TokenConstraint.observe = timed_observe


def generate(engine: TransformersEngine, prompt_ids: list[int], concurrency: int, max_tokens: int,
             grammar: Optional[str], seed: int) -> tuple[int, float]:
    """Run `concurrency` requests together to the end; (tokens generated, wall seconds)."""
    started = time.perf_counter()
    for i in range(concurrency):
        engine.add(EngineRequest(f"r{seed}-{i}", prompt_ids,
                                 SamplingParams(temperature=0.7, max_tokens=max_tokens, seed=seed + i), 1,
                                 grammar=grammar))
    tokens = 0
    while engine.has_work:
        tokens += sum(o.tokens for o in engine.step())
    return tokens, time.perf_counter() - started


def compile_times(engine: TransformersEngine) -> tuple[list[float], list[float]]:
    """Per corpus schema: seconds to build the grammar (API side) and to compile it for the tokenizer
    (worker side, a cache miss: a fresh compiler)."""
    corpus = json.loads(CORPUS.read_text())["supported"]
    compiler = constraints.GrammarCompiler(engine.tokenizer.to_json(), engine.grammars.vocab_size,
                                           engine._stop_ids)
    build, compile_ = [], []
    for entry in corpus:
        started = time.perf_counter()
        grammar = json_schema_grammar(entry["schema"], strict=True)
        build.append(time.perf_counter() - started)
        compiler.constraint(grammar)
    compile_ = list(compiler.compile_seconds)
    return build, compile_


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.structured", description=__doc__.split("\n\n")[0])
    parser.add_argument("-c", "--concurrency", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--rounds", type=int, default=3, help="alternating runs of each kind per concurrency")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--torch-threads", type=int, default=None, help="default: LlamaGate's")
    parser.add_argument("--engine", choices=sorted(ENGINES), default="transformers", help="default: %(default)s")
    args = parser.parse_args(argv)
    command = shlex.join([sys.executable, "-m", "bench.structured", *(sys.argv[1:] if argv is None else argv)])
    print(f"command: {command}")
    load_before = host_load()
    print(f"host before: {describe_load(load_before)}", flush=True)

    overrides = {"max_batch_size": max(args.concurrency)}
    if args.torch_threads:
        overrides["torch_threads"] = overrides["llamacpp_threads"] = args.torch_threads
    settings = Settings.from_env(**overrides)
    spec = ModelRegistry.load(settings.models_file).get("smollm2-135m-instruct")
    tokenizer = ChatTokenizer.from_directory(prepare_tokenizer(spec.tokenizer, settings.cache_dir))
    engine = ENGINES[args.engine](spec, settings, tokenizer)
    engine.load()
    timer = MaskTimer()
    timer.install()

    build, compiled = compile_times(engine)
    print(f"grammar build (schema -> grammar, API side), {len(build)} schemas: median "
          f"{1000 * statistics.median(build):.2f} ms, max {1000 * max(build):.2f} ms")
    print(f"grammar compile (grammar -> tokenizer matcher, worker side, cache miss): median "
          f"{1000 * statistics.median(compiled):.2f} ms, max {1000 * max(compiled):.2f} ms", flush=True)

    grammar = json_schema_grammar(STORY_SCHEMA, strict=True)
    prompt_ids = tokenizer.prompt_ids(PROMPT)
    generate(engine, prompt_ids, max(args.concurrency), 8, grammar, 0)  # warm-up (and the grammar's compile)
    rows, points = [], []
    for concurrency in args.concurrency:
        rates: dict[str, list[float]] = {"plain": [], "json_schema": []}
        mask_before = (timer.seconds, timer.tokens)
        for round_ in range(args.rounds):
            for kind in ("plain", "json_schema"):
                tokens, wall = generate(engine, prompt_ids, concurrency, args.max_tokens,
                                        grammar if kind == "json_schema" else None, 1000 * round_)
                rates[kind].append(tokens / wall)
                print(f"  c={concurrency} {kind:<11} {tokens} tokens in {wall:.2f}s: {tokens / wall:.1f} tokens/s",
                      flush=True)
        plain, constrained = statistics.median(rates["plain"]), statistics.median(rates["json_schema"])
        slowdown = 1 - constrained / plain
        mask_ms = 1000 * (timer.seconds - mask_before[0]) / max(1, timer.tokens - mask_before[1])
        rows.append([str(concurrency), f"{plain:.1f}", f"{constrained:.1f}", f"{100 * slowdown:+.1f}%",
                     f"{mask_ms:.3f}", "met" if slowdown < GOAL_SLOWDOWN else "NOT met"])
        points.append({"concurrency": concurrency, "plain_tokens_per_s": round(plain, 2),
                       "json_schema_tokens_per_s": round(constrained, 2), "slowdown": round(slowdown, 4),
                       "mask_ms_per_token": round(mask_ms, 4)})
    print()
    print_table(("c", "plain tok/s", "json_schema tok/s", "slower by", "mask ms/token", "goal <10%"), rows)
    load_after = host_load()
    print(f"host after: {describe_load(load_after)}")
    print(f"command: {command}")
    print_json_line({"benchmark": "structured", "command": command, "host_before": load_before,
                     "host_after": load_after, "points": points, "goal_slowdown": GOAL_SLOWDOWN,
                     "grammar_build_ms": {"median": round(1000 * statistics.median(build), 3),
                                          "max": round(1000 * max(build), 3)},
                     "grammar_compile_ms": {"median": round(1000 * statistics.median(compiled), 3),
                                            "max": round(1000 * max(compiled), 3)}})
    return 0


if __name__ == "__main__":
    sys.exit(main())
