"""Benchmark (b): LlamaGate's own request path, with an engine that computes nothing.

Starts an isolated stack (web processes + one worker serving `llamagate-benchmark`, which emits
fixed tokens without computing), waits for /readyz, warms up, then measures with max_tokens=16:
non-streaming requests/s and latency, and streaming streams/s and time to first token, at each
concurrency. What remains is the cost of HTTP, RabbitMQ, the worker loop, Redis and SSE.

    .venv/bin/python -m bench.path                       # 20 s per point, c = 1 10 50
    .venv/bin/python -m bench.path --duration 3 --warmup 1   # a quick smoke run

The load generator runs on the same machine: its own CPU share is printed ("loadgen CPU"), and so
is the CPU time the web and worker processes spent per request.
"""

from __future__ import annotations

import argparse
import asyncio
import shlex
import sys
from dataclasses import replace
from pathlib import Path
from typing import Optional

if __package__ in (None, ""):  # run as `python bench/path.py`: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.loadgen import (
    RESULT_COLUMNS,
    LoadResult,
    LoadSpec,
    Target,
    print_errors,
    result_row,
    run_load,
)
from bench.report import describe_load, host_load, print_json_line, print_table
from bench.stack import (
    Stack,
    StackConfig,
    add_stack_arguments,
    check_stack_arguments,
    cpu_seconds,
    exit_on_stack_failure,
    install_signal_handlers,
)

MODEL = "llamagate-benchmark"
# (name, mode, concurrency, measure, comparison, target): what the issue asks of the path.
GOALS = (
    ("non-streaming throughput", "non-stream", 50, "rate", ">=", 300.0),
    ("streaming throughput", "stream", 10, "rate", ">=", 100.0),
    ("time to first token p50", "stream", 1, "ttft_p50_ms", "<=", 5.0),
)


UNITS = {"rate": "/s", "ttft_p50_ms": " ms"}


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.path", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("-c", "--concurrency", type=int, nargs="+", default=[1, 10, 50],
                        help="concurrency levels, each measured streaming and not")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per point")
    parser.add_argument("--warmup", type=float, default=5.0,
                        help="seconds of unmeasured load per mode before measuring")
    parser.add_argument("--max-tokens", type=int, default=16, help="max_tokens of every request")
    parser.add_argument("--modes", nargs="+", choices=("non-stream", "stream"), default=["non-stream", "stream"])
    parser.add_argument("--web-concurrency", type=int, default=1, help="gunicorn worker processes")
    parser.add_argument("--max-batch-size", type=int, default=64, help="LLAMAGATE_MAX_BATCH_SIZE of the worker")
    parser.add_argument("--step-ms", type=float, default=0.0, help="LLAMAGATE_BENCHMARK_STEP_MS")
    parser.add_argument("--strict", action="store_true", help="also exit non-zero when a goal is missed")
    add_stack_arguments(parser)
    args = parser.parse_args(argv)
    check_stack_arguments(parser, args)
    return args


async def measure(stack: Stack, spec: LoadSpec) -> tuple[LoadResult, dict]:
    """One point, with the CPU time the stack's processes spent on it."""
    web_pids = stack.web_worker_pids()
    worker_pids = [p.pid for p in stack.workers]
    web_before, worker_before = cpu_seconds(web_pids), cpu_seconds(worker_pids)
    result = await run_load(Target.from_url(stack.url, stack.api_key), spec)
    stack.check_alive()
    done = max(result.completed, 1)
    cost = {"web_cpu_ms_per_request": round(1000 * (cpu_seconds(web_pids) - web_before) / done, 3),
            "worker_cpu_ms_per_request": round(1000 * (cpu_seconds(worker_pids) - worker_before) / done, 3)}
    return result, cost


async def benchmark(stack: Stack, args: argparse.Namespace) -> list[tuple[LoadResult, dict]]:
    base = LoadSpec(model=MODEL, max_tokens=args.max_tokens, duration=args.duration, timeout=60.0)
    points = []
    for mode in args.modes:
        spec = replace(base, stream=mode == "stream")
        if args.warmup > 0:
            await run_load(Target.from_url(stack.url, stack.api_key),
                           replace(spec, concurrency=max(args.concurrency), duration=args.warmup))
        for concurrency in args.concurrency:
            result, cost = await measure(stack, replace(spec, concurrency=concurrency))
            print(f"  {mode:10} c={concurrency:<4} {result.rate:8.1f}/s  errors={result.errors}", flush=True)
            points.append((result, cost))
    return points


def evaluate_goals(points: list[tuple[LoadResult, dict]]) -> list[dict]:
    by_point = {(r.spec.stream, r.spec.concurrency): r for r, _ in points}
    goals = []
    for name, mode, concurrency, measure_, comparison, target in GOALS:
        result = by_point.get((mode == "stream", concurrency))
        value: Optional[float] = None
        if result is not None:
            ttft = result.ttft(0.5)
            value = result.rate if measure_ == "rate" else (None if ttft is None else ttft * 1000)
        met = None if value is None else (value >= target if comparison == ">=" else value <= target)
        goals.append({"goal": name, "mode": mode, "concurrency": concurrency, "measure": measure_,
                      "target": f"{comparison} {target:g}", "value": None if value is None else round(value, 3),
                      "met": met})
    errors = sum(r.errors for r, _ in points)
    goals.append({"goal": "zero errors", "mode": "all", "concurrency": None, "measure": "errors",
                  "target": "== 0", "value": errors, "met": errors == 0})
    return goals


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    install_signal_handlers()
    command = shlex.join([sys.executable, "-m", "bench.path", *(sys.argv[1:] if argv is None else argv)])
    config = StackConfig.from_args(args, (MODEL,), web_concurrency=args.web_concurrency,
                                   max_batch_size=args.max_batch_size, benchmark_step_ms=args.step_ms)
    print(f"command: {command}")
    load_before = host_load()
    print(f"host before: {describe_load(load_before)}", flush=True)
    print(f"stack: {config.describe()}", flush=True)
    with exit_on_stack_failure(), Stack(config) as stack:
        print(f"ready at {stack.url}; web workers {stack.web_worker_pids()}", flush=True)
        points = asyncio.run(benchmark(stack, args))

    print()
    columns = RESULT_COLUMNS + ("web CPU ms/req", "worker CPU ms/req")
    print_table(columns, [result_row(r) + [f"{c['web_cpu_ms_per_request']:.2f}",
                                           f"{c['worker_cpu_ms_per_request']:.2f}"] for r, c in points])
    for result, _ in points:
        print_errors(result)
    goals = evaluate_goals(points)
    print()
    print_table(("goal", "point", "target", "measured", "met"),
                [[g["goal"], f"{g['mode']} c={g['concurrency']}" if g["concurrency"] else g["mode"],
                  g["target"] + UNITS.get(g["measure"], ""),
                  "-" if g["value"] is None else f"{g['value']:g}",
                  {True: "yes", False: "NO", None: "not measured"}[g["met"]]] for g in goals])
    load_after = host_load()
    print(f"host after: {describe_load(load_after)}")
    print(f"\ncommand: {command}")
    print_json_line({"benchmark": "path", "command": command, "host_before": load_before,
                     "host_after": load_after, "stack": config.describe(),
                     "points": [dict(r.summary(), **c) for r, c in points], "goals": goals})
    if any(r.errors for r, _ in points):
        return 1
    if args.strict and any(g["met"] is False for g in goals):
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
