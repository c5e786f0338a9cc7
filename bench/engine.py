"""Benchmark (a): generated tokens per second of the real CPU model, alone and batched.

Starts an isolated stack whose worker serves the real model (smollm2-135m-instruct by default),
then at each concurrency runs that many clients, each asking `--rounds` times for 128 tokens of a
long story (temperature 0.7, a fixed seed per client, so the model rarely stops early and runs
repeat). Aggregate throughput is sum(completion_tokens) / wall time; the ratio of the highest to
the lowest concurrency shows what continuous batching buys (goal: c=8 >= 3x c=1).

    .venv/bin/python -m bench.engine                     # c = 1 4 8, 3 rounds each
    .venv/bin/python -m bench.engine --rounds 1 -c 1 8   # a quick smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import shlex
import sys
from dataclasses import replace
from pathlib import Path
from typing import Optional

if __package__ in (None, ""):  # run as `python bench/engine.py`: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.loadgen import LoadResult, LoadSpec, Target, print_errors, run_load
from bench.report import (
    describe_load,
    format_ms,
    host_load,
    print_json_line,
    print_table,
)
from bench.stack import (
    Stack,
    StackConfig,
    add_stack_arguments,
    check_stack_arguments,
    cpu_seconds,
    exit_on_stack_failure,
    install_signal_handlers,
)

DEFAULT_MODEL = "smollm2-135m-instruct"
PROMPT = ("Write a long story about a lighthouse keeper who finds a message in a bottle. "
          "Describe every room of the lighthouse, the sea, the weather and the keeper's thoughts in detail.")
RATIO_GOAL = 3.0


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.engine", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("-c", "--concurrency", type=int, nargs="+", default=[1, 4, 8], help="concurrency levels")
    parser.add_argument("--rounds", type=int, default=3, help="requests per client at each level")
    parser.add_argument("--max-tokens", type=int, default=128, help="tokens each request asks for")
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--seed", type=int, default=1234, help="client i sends seed+i")
    parser.add_argument("--prompt", default=PROMPT)
    parser.add_argument("--model", default=DEFAULT_MODEL, help="the model the worker loads")
    parser.add_argument("--warmup", type=int, default=1,
                        help="unmeasured requests at the highest concurrency first (0: none)")
    parser.add_argument("--max-batch-size", type=int, default=None,
                        help="LLAMAGATE_MAX_BATCH_SIZE (default: LlamaGate's)")
    parser.add_argument("--torch-threads", type=int, default=None,
                        help="LLAMAGATE_TORCH_THREADS (default: LlamaGate's, one per core)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds one request may take")
    add_stack_arguments(parser)
    args = parser.parse_args(argv)
    check_stack_arguments(parser, args)
    if args.max_batch_size is not None and args.max_batch_size < max(args.concurrency):
        parser.error("--max-batch-size is below the highest concurrency: requests would queue, not batch")
    return args


async def benchmark(stack: Stack, args: argparse.Namespace) -> list[tuple[LoadResult, float]]:
    target = Target.from_url(stack.url, stack.api_key)
    base = LoadSpec(model=args.model, max_tokens=args.max_tokens, prompt=args.prompt,
                    temperature=args.temperature, seed=args.seed, timeout=args.timeout)
    if args.warmup > 0:
        top = max(args.concurrency)
        await run_load(target, replace(base, concurrency=top, requests=top * args.warmup))
    points = []
    worker_pids = [p.pid for p in stack.workers]
    for concurrency in args.concurrency:
        cpu_before = cpu_seconds(worker_pids)
        result = await run_load(target, replace(base, concurrency=concurrency, requests=concurrency * args.rounds))
        stack.check_alive()
        worker_cpu = (cpu_seconds(worker_pids) - cpu_before) / result.wall
        print(f"  c={concurrency:<3} {result.tokens_per_second:7.1f} tokens/s  errors={result.errors}", flush=True)
        points.append((result, worker_cpu))
    return points


def short_completions(result: LoadResult) -> int:
    """Requests that got fewer tokens than asked for: the model stopped early, so the clients did
    not all keep the batch full until the end."""
    return sum(1 for r in result.results if r.ok and r.completion_tokens < result.spec.max_tokens)


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    install_signal_handlers()
    command = shlex.join([sys.executable, "-m", "bench.engine", *(sys.argv[1:] if argv is None else argv)])
    extra_env = {"LLAMAGATE_TORCH_THREADS": str(args.torch_threads)} if args.torch_threads is not None else {}
    config = StackConfig.from_args(args, (args.model,), max_batch_size=args.max_batch_size, extra_env=extra_env)
    print(f"command: {command}")
    load_before = host_load()
    print(f"host before: {describe_load(load_before)}", flush=True)
    print(f"stack: {config.describe()}", flush=True)
    with exit_on_stack_failure(), Stack(config) as stack:
        print(f"ready at {stack.url}", flush=True)
        points = asyncio.run(benchmark(stack, args))

    base_rate = points[0][0].tokens_per_second if points else 0.0
    rows = []
    for result, worker_cpu in points:
        ratio = result.tokens_per_second / base_rate if base_rate else 0.0
        rows.append([str(result.spec.concurrency), str(len(result.results)), str(result.errors),
                     str(result.completion_tokens), str(short_completions(result)), f"{result.wall:.1f}",
                     f"{result.tokens_per_second:.1f}", f"{ratio:.2f}x", format_ms(result.latency(0.5)),
                     f"{100 * worker_cpu:.0f}%"])
    print()
    first = points[0][0].spec.concurrency if points else 1
    print_table(("c", "requests", "errors", "tokens", "short", "wall s", "tokens/s", f"vs c={first}", "p50 ms",
                 "worker CPU"), rows)
    for result, _ in points:
        print_errors(result)

    by_concurrency = {r.spec.concurrency: r for r, _ in points}
    ratio = None
    if 1 in by_concurrency and 8 in by_concurrency and by_concurrency[1].tokens_per_second:
        ratio = by_concurrency[8].tokens_per_second / by_concurrency[1].tokens_per_second
        print(f"\nc8/c1 = {ratio:.2f}x (goal >= {RATIO_GOAL:g}x): {'met' if ratio >= RATIO_GOAL else 'NOT met'}")
    else:
        print("\nc8/c1: not measured (needs -c 1 ... 8)")
    load_after = host_load()
    print(f"host after: {describe_load(load_after)}")
    print(f"command: {command}")
    print_json_line({
        "benchmark": "engine", "command": command, "host_before": load_before, "host_after": load_after,
        "stack": config.describe(),
        "points": [dict(r.summary(), short_completions=short_completions(r), worker_cpu_pct=round(100 * cpu, 1))
                   for r, cpu in points],
        "c8_over_c1": None if ratio is None else round(ratio, 3), "goal_c8_over_c1": RATIO_GOAL,
        "goal_met": None if ratio is None else ratio >= RATIO_GOAL})
    return 1 if any(r.errors for r, _ in points) else 0


if __name__ == "__main__":
    sys.exit(main())
