"""Benchmark: the CPU engines through the whole path, against llama.cpp without LlamaGate.

In one run, at each concurrency, 128 generated tokens per request (a long-story prompt,
temperature 0.7, a fixed seed per client, so the model rarely stops early), it measures aggregate
tokens/s and time to first token (TTFT) of:

- `llamagate-llamacpp`: LlamaGate with the llama.cpp engine, through the whole path (HTTP
  streaming, gunicorn, RabbitMQ, the worker, Redis);
- `llamagate-transformers`: the same path with the PyTorch engine, on the same GGUF file;
- `bare-loop`: llama-cpp-python's batch API driven by a minimal loop in this process (one context,
  one sequence per client, one `llama_decode` per step, the same sampler chain; no queue, no HTTP,
  no detokenization);
- `high-level` (concurrency 1 only): llama-cpp-python's own `Llama.create_completion`, one stream.

Every system sees the same prompt tokens (the model's chat template). Configurations run
interleaved (`--rounds` times each, in turn) so that other load on this shared machine touches
them all alike; the host's load average is printed before and after.

Goals (issue 10): llamacpp >= 90% of the bare loop at every concurrency; >= 85% of the high-level
reference at concurrency 1; its concurrency-8 aggregate >= 1.3x its concurrency-1 figure.

    .venv/bin/python -m bench.cpu_engines                       # c = 1 4 8, 3 rounds, all four systems
    .venv/bin/python -m bench.cpu_engines --rounds 1 -c 1 8 --skip-transformers   # a quick run
"""

from __future__ import annotations

import argparse
import asyncio
import shlex
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

if __package__ in (None, ""):  # run as `python bench/cpu_engines.py`: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.loadgen import LoadSpec, Target, print_errors, run_load
from bench.report import describe_load, format_ms, host_load, print_json_line, print_table
from bench.stack import (
    Stack,
    StackConfig,
    add_stack_arguments,
    check_stack_arguments,
    exit_on_stack_failure,
    install_signal_handlers,
)

LLAMACPP_MODEL = "smollm2-135m-instruct"
TRANSFORMERS_MODEL = "smollm2-135m-instruct-transformers"
PROMPT = ("Write a long story about a lighthouse keeper who finds a message in a bottle. "
          "Describe every room of the lighthouse, the sea, the weather and the keeper's thoughts in detail.")
SYSTEMS = ("llamagate-llamacpp", "bare-loop", "high-level", "llamagate-transformers")
GOAL_VS_BARE = 0.90
GOAL_VS_HIGH_LEVEL = 0.85
GOAL_C8_OVER_C1 = 1.3


@dataclass
class Point:
    """Every measured run of one system at one concurrency, summed."""

    tokens: int = 0
    wall: float = 0.0
    short: int = 0  # requests that ended before max_tokens (the model stopped)
    errors: int = 0
    ttfts: list[float] = field(default_factory=list)

    def add(self, tokens: int, wall: float, ttfts: list[float], short: int, errors: int = 0) -> None:
        self.tokens += tokens
        self.wall += wall
        self.ttfts.extend(ttfts)
        self.short += short
        self.errors += errors

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.wall if self.wall else 0.0

    @property
    def ttft_p50(self) -> Optional[float]:
        return statistics.median(self.ttfts) if self.ttfts else None


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.cpu_engines", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("-c", "--concurrency", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--rounds", type=int, default=3, help="interleaved repetitions of every configuration")
    parser.add_argument("--requests-per-client", type=int, default=2,
                        help="requests each client sends in one measured run")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--seed", type=int, default=1234, help="client i sends seed+i")
    parser.add_argument("--threads", type=int, default=0,
                        help="llama.cpp (and torch) threads for every system; 0: one per core")
    parser.add_argument("--skip-transformers", action="store_true", help="leave out the PyTorch engine")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds one request may take")
    add_stack_arguments(parser)
    args = parser.parse_args(argv)
    check_stack_arguments(parser, args)
    return args


# --- llama.cpp without LlamaGate ------------------------------------------------------------------

class BareLlama:
    """One llama.cpp context configured as the engine configures its own, driven by a minimal loop."""

    def __init__(self, path: Path, threads: int, max_sequences: int, kv_tokens: int):
        import llama_cpp

        from inference_worker.engines.llamacpp_runtime import init_backend

        init_backend()  # quiet llama.cpp's loader, as the worker does
        self.lib = llama_cpp
        model_params = llama_cpp.llama_model_default_params()
        model_params.n_gpu_layers = 0
        self.model = llama_cpp.llama_model_load_from_file(str(path).encode(), model_params)
        self.vocab = llama_cpp.llama_model_get_vocab(self.model)
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = kv_tokens
        params.n_batch = params.n_ubatch = 512 + max_sequences
        params.n_seq_max = max_sequences
        params.n_threads = params.n_threads_batch = threads
        params.kv_unified = True
        params.no_perf = True
        self.ctx = llama_cpp.llama_init_from_model(self.model, params)
        self.memory = llama_cpp.llama_get_memory(self.ctx)
        self.batch = llama_cpp.llama_batch_init(512 + max_sequences, 0, 1)

    def _sampler(self, temperature: float, seed: int):
        lib = self.lib
        chain_params = lib.llama_sampler_chain_default_params()
        chain_params.no_perf = True
        chain = lib.llama_sampler_chain_init(chain_params)
        lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_temp(temperature))
        lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_dist(seed))
        return chain

    def run(self, prompt: list[int], concurrency: int, requests: int, max_tokens: int, temperature: float,
            seed: int) -> tuple[int, float, list[float], int]:
        """`concurrency` clients, each starting its next request when the last ended, `requests` in all.
        Returns (completion tokens, wall seconds, TTFTs, short completions)."""
        lib, batch = self.lib, self.batch
        slots: list[dict] = []
        started_requests = 0
        tokens, ttfts, short = 0, [], 0

        def start(seq_id: int) -> dict:
            nonlocal started_requests
            started_requests += 1
            return {"seq": seq_id, "pos": 0, "next": None, "generated": 0, "started": time.perf_counter(),
                    "sampler": self._sampler(temperature, (seed + seq_id + 7919 * started_requests) & 0x7FFFFFFF)}

        began = time.perf_counter()
        slots = [start(i) for i in range(min(concurrency, requests))]
        while slots:
            n = 0
            rows = []
            for slot in slots:
                feed = prompt if slot["next"] is None else [slot["next"]]
                for offset, token in enumerate(feed):
                    batch.token[n] = token
                    batch.pos[n] = slot["pos"] + offset
                    batch.n_seq_id[n] = 1
                    batch.seq_id[n][0] = slot["seq"]
                    batch.logits[n] = offset == len(feed) - 1
                    n += 1
                slot["pos"] += len(feed)
                rows.append(n - 1)
            batch.n_tokens = n
            if lib.llama_decode(self.ctx, batch) != 0:
                raise RuntimeError("llama_decode failed in the bare loop")
            now = time.perf_counter()
            survivors = []
            for slot, row in zip(slots, rows):
                token = lib.llama_sampler_sample(slot["sampler"], self.ctx, row)
                if slot["generated"] == 0:
                    ttfts.append(now - slot["started"])
                slot["generated"] += 1
                tokens += 1
                ended_early = lib.llama_vocab_is_eog(self.vocab, token)
                if ended_early or slot["generated"] >= max_tokens:
                    short += bool(ended_early)
                    lib.llama_memory_seq_rm(self.memory, slot["seq"], -1, -1)
                    lib.llama_sampler_free(slot["sampler"])
                    if started_requests < requests:
                        survivors.append(start(slot["seq"]))
                    continue
                slot["next"] = token
                survivors.append(slot)
            slots = survivors
        return tokens, time.perf_counter() - began, ttfts, short


class HighLevelLlama:
    """llama-cpp-python's own `Llama` object: the single-stream reference."""

    def __init__(self, path: Path, threads: int):
        from llama_cpp import Llama

        self.llama = Llama(model_path=str(path), n_ctx=2048, n_threads=threads, n_threads_batch=threads,
                           n_gpu_layers=0, verbose=False)

    def run(self, prompt: list[int], requests: int, max_tokens: int, temperature: float,
            seed: int) -> tuple[int, float, list[float], int]:
        tokens, ttfts, short = 0, [], 0
        began = time.perf_counter()
        for i in range(requests):
            self.llama.reset()  # no prefix reuse between requests: every request prefills its prompt
            started = time.perf_counter()
            first = None
            count = 0
            finish = None
            # Sampling as the others sample: temperature only (top_k, top_p, min_p and penalties off).
            for chunk in self.llama.create_completion(prompt, max_tokens=max_tokens, temperature=temperature,
                                                      top_p=1.0, top_k=0, min_p=0.0, typical_p=1.0,
                                                      repeat_penalty=1.0, seed=seed + i, stream=True):
                finish = chunk["choices"][0]["finish_reason"] or finish
                if finish is not None:
                    continue  # the closing chunk carries the finish reason and no token
                if first is None:
                    first = time.perf_counter() - started
                count += 1
            ttfts.append(first)
            tokens += count
            short += finish == "stop"
        return tokens, time.perf_counter() - began, ttfts, short


# --- the run ------------------------------------------------------------------------------------------

async def through_llamagate(stack: Stack, model: str, concurrency: int,
                            args) -> tuple[int, float, list[float], int, int]:
    spec = LoadSpec(model=model, stream=True, concurrency=concurrency,
                    requests=concurrency * args.requests_per_client, max_tokens=args.max_tokens, prompt=PROMPT,
                    temperature=args.temperature, seed=args.seed, timeout=args.timeout)
    result = await run_load(Target.from_url(stack.url, stack.api_key), spec)
    print_errors(result)
    short = sum(1 for r in result.results if r.ok and r.completion_tokens < args.max_tokens)
    ttfts = [r.ttft for r in result.results if r.ok and r.ttft is not None]
    return result.completion_tokens, result.wall, ttfts, short, result.errors


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    install_signal_handlers()
    command = shlex.join([sys.executable, "-m", "bench.cpu_engines", *(sys.argv[1:] if argv is None else argv)])
    from inference_worker.engines.llamacpp_runtime import default_threads
    from shared.chat_tokenizer import ChatTokenizer
    from shared.registry import ModelRegistry
    from shared.settings import Settings
    from shared.tokenizer_cache import prepare_tokenizer

    settings = Settings.from_env({})
    spec = ModelRegistry.load(settings.models_file).get(LLAMACPP_MODEL)
    weights = spec.weights.resolve()
    tokenizer = ChatTokenizer.from_directory(prepare_tokenizer(spec.tokenizer, settings.cache_dir))
    prompt = tokenizer.prompt_ids([{"role": "user", "content": PROMPT}])
    threads = args.threads or default_threads()
    models = (LLAMACPP_MODEL,) if args.skip_transformers else (LLAMACPP_MODEL, TRANSFORMERS_MODEL)
    env = {"LLAMAGATE_LLAMACPP_THREADS": str(threads), "LLAMAGATE_TORCH_THREADS": str(threads)}
    config = StackConfig.from_args(args, models, extra_env=env)

    print(f"command: {command}")
    load_before = host_load()
    print(f"host before: {describe_load(load_before)}", flush=True)
    print(f"stack: {config.describe()}; prompt: {len(prompt)} tokens; threads: {threads}", flush=True)
    bare = BareLlama(weights, threads, settings.max_batch_size, max(settings.llamacpp_kv_tokens, spec.context_length))
    high_level = HighLevelLlama(weights, threads)
    points: dict[tuple[str, int], Point] = {}
    with exit_on_stack_failure(), Stack(config) as stack:
        print(f"ready at {stack.url}", flush=True)

        def measure(system: str, concurrency: int, record: bool = True) -> None:
            errors = 0
            if system == "llamagate-llamacpp":
                tokens, wall, ttfts, short, errors = asyncio.run(through_llamagate(stack, LLAMACPP_MODEL,
                                                                                   concurrency, args))
            elif system == "llamagate-transformers":
                tokens, wall, ttfts, short, errors = asyncio.run(through_llamagate(stack, TRANSFORMERS_MODEL,
                                                                                   concurrency, args))
            elif system == "bare-loop":
                tokens, wall, ttfts, short = bare.run(prompt, concurrency, concurrency * args.requests_per_client,
                                                      args.max_tokens, args.temperature, args.seed)
            else:
                tokens, wall, ttfts, short = high_level.run(prompt, args.requests_per_client, args.max_tokens,
                                                            args.temperature, args.seed)
            stack.check_alive()
            if record:
                points.setdefault((system, concurrency), Point()).add(tokens, wall, ttfts, short, errors)
                print(f"  {system:<24} c={concurrency:<2} {tokens / wall:7.1f} tokens/s  "
                      f"ttft p50 {format_ms(statistics.median(ttfts) if ttfts else None)} ms  errors={errors}",
                      flush=True)

        systems = [s for s in SYSTEMS if not (args.skip_transformers and s == "llamagate-transformers")]
        print("warming up (unmeasured)", flush=True)
        for system in systems:
            measure(system, 1, record=False)
        for round_index in range(args.rounds):
            print(f"round {round_index + 1}/{args.rounds} (load average {host_load()['loadavg']})", flush=True)
            for concurrency in args.concurrency:
                for system in systems:
                    if system == "high-level" and concurrency != 1:
                        continue
                    measure(system, concurrency)

    rows = []
    ordered = sorted(points.items(), key=lambda item: (item[0][1], SYSTEMS.index(item[0][0])))
    for (system, concurrency), point in ordered:
        rows.append([system, str(concurrency), str(point.tokens), f"{point.wall:.1f}", f"{point.tokens_per_second:.1f}",
                     format_ms(point.ttft_p50), str(point.short), str(point.errors)])
    print()
    print_table(("system", "c", "tokens", "wall s", "tokens/s", "TTFT p50 ms", "short", "errors"), rows)

    goals = check_goals(points, args.concurrency)
    print()
    for line in goals["lines"]:
        print(line)
    load_after = host_load()
    print(f"host after: {describe_load(load_after)}")
    print(f"command: {command}")
    print_json_line({
        "benchmark": "cpu_engines", "command": command, "host_before": load_before, "host_after": load_after,
        "threads": threads, "prompt_tokens": len(prompt), "max_tokens": args.max_tokens, "rounds": args.rounds,
        "points": [{"system": s, "concurrency": c, "tokens": p.tokens, "wall_s": round(p.wall, 3),
                    "tokens_per_s": round(p.tokens_per_second, 2),
                    "ttft_p50_ms": None if p.ttft_p50 is None else round(1000 * p.ttft_p50, 1),
                    "short": p.short, "errors": p.errors} for (s, c), p in points.items()],
        "goals": {k: v for k, v in goals.items() if k != "lines"}})
    return 1 if any(p.errors for p in points.values()) else 0


def check_goals(points: dict[tuple[str, int], Point], concurrencies: list[int]) -> dict:
    def rate(system: str, concurrency: int) -> Optional[float]:
        point = points.get((system, concurrency))
        return point.tokens_per_second if point else None

    lines, results = [], {}
    for concurrency in concurrencies:
        ours, bare = rate("llamagate-llamacpp", concurrency), rate("bare-loop", concurrency)
        if ours and bare:
            ratio = ours / bare
            results[f"vs_bare_c{concurrency}"] = round(ratio, 3)
            lines.append(f"llamagate-llamacpp / bare-loop at c={concurrency}: {ratio:.2f} "
                         f"(goal >= {GOAL_VS_BARE:.2f}): {'met' if ratio >= GOAL_VS_BARE else 'NOT met'}")
    ours, reference = rate("llamagate-llamacpp", 1), rate("high-level", 1)
    if ours and reference:
        ratio = ours / reference
        results["vs_high_level_c1"] = round(ratio, 3)
        lines.append(f"llamagate-llamacpp / high-level at c=1: {ratio:.2f} "
                     f"(goal >= {GOAL_VS_HIGH_LEVEL:.2f}): {'met' if ratio >= GOAL_VS_HIGH_LEVEL else 'NOT met'}")
    top = rate("llamagate-llamacpp", 8)
    if ours and top:
        ratio = top / ours
        results["c8_over_c1"] = round(ratio, 3)
        lines.append(f"llamagate-llamacpp c=8 / c=1: {ratio:.2f}x "
                     f"(goal >= {GOAL_C8_OVER_C1:.1f}x): {'met' if ratio >= GOAL_C8_OVER_C1 else 'NOT met'}")
    return {"lines": lines, **results}


if __name__ == "__main__":
    sys.exit(main())
