"""Benchmark (c): memory of a web process holding many idle streams, and of a worker with the real model.

Part 1 starts an isolated stack with ONE web process (WEB_CONCURRENCY=1) and a worker serving
`llamagate-benchmark` paced slowly (LLAMAGATE_BENCHMARK_STEP_MS, default 1 s per token), opens
`--streams` streaming requests that each ask for thousands of tokens, and reports the VmRSS of the
gunicorn worker process before and while they are all open. LLAMAGATE_MAX_BATCH_SIZE of them run
(one token a second each); the rest wait queued in RabbitMQ: both are the web process idly waiting.

Part 2 starts a stack whose worker loads the real default model and reports that worker's VmRSS
once it is ready and idle, and again after one short request.

    .venv/bin/python -m bench.memory                          # 500 streams held for 20 s
    .venv/bin/python -m bench.memory --streams 100 --hold 3   # a quick smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

if __package__ in (None, ""):  # run as `python bench/memory.py`: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.loadgen import HttpConnection, LoadSpec, Target, run_load
from bench.report import (
    describe_load,
    format_mib,
    host_load,
    print_json_line,
    print_table,
)
from bench.stack import (
    Stack,
    StackConfig,
    StackError,
    add_stack_arguments,
    check_stack_arguments,
    exit_on_stack_failure,
    install_signal_handlers,
    open_fds,
    rss_kib,
)
from broker.naming import chat_queue
from shared.settings import Settings

BENCHMARK_MODEL = "llamagate-benchmark"
DEFAULT_MODEL = Settings.__dataclass_fields__["worker_models"].default[0]
HOLD_TIMEOUT = 3600.0  # seconds: the streams end when the benchmark closes them, not before


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.memory", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--streams", type=int, default=500, help="streaming requests held open at once")
    parser.add_argument("--hold", type=float, default=20.0,
                        help="seconds to keep them open once all are in, sampling RSS every second")
    parser.add_argument("--open-timeout", type=float, default=60.0,
                        help="seconds allowed for all streams to reach the web process")
    parser.add_argument("--max-batch-size", type=int, default=64,
                        help="LLAMAGATE_MAX_BATCH_SIZE: streams that run; the rest wait queued (above ~100 "
                             "the worker's Redis pool runs out of connections: jobs fail)")
    parser.add_argument("--step-ms", type=float, default=1000.0,
                        help="LLAMAGATE_BENCHMARK_STEP_MS: one token per running stream per step")
    parser.add_argument("--max-tokens", type=int, default=4000,
                        help="max_tokens of each stream: enough that none ends while held")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="the real model whose worker part 2 measures")
    parts = parser.add_mutually_exclusive_group()
    parts.add_argument("--streams-only", action="store_true", help="run part 1 only")
    parts.add_argument("--model-only", action="store_true", help="run part 2 only")
    add_stack_arguments(parser)
    args = parser.parse_args(argv)
    check_stack_arguments(parser, args)
    return args


@dataclass
class StreamCounts:
    sent: int = 0
    running: int = 0  # response head received: a worker admitted the job
    errors: int = 0
    first_error: Optional[str] = None

    def fail(self, message: str) -> None:
        self.errors += 1
        self.first_error = self.first_error or message


async def hold_stream(connection: HttpConnection, request: bytes, counts: StreamCounts) -> None:
    """Send one streaming request and read whatever comes until cancelled."""
    def on_status(status: int) -> None:
        if status == 200:
            counts.running += 1

    counts.sent += 1  # the connection is open: `post` writes the request before it first waits
    result = await connection.post(request, stream=True, timeout=HOLD_TIMEOUT, on_status=on_status)
    counts.fail(result.error or "stream ended while it should have been held open")


def web_rss(stack: Stack) -> dict:
    workers = stack.web_worker_pids()
    rss = [rss_kib(pid) or 0 for pid in workers]
    return {"workers_kib": sum(rss), "per_worker_kib": rss, "master_kib": rss_kib(stack.web.pid),
            "worker_fds": sum(open_fds(pid) or 0 for pid in workers)}


def queued_jobs(broker_url: str, model: str) -> Optional[int]:
    """Messages ready in the model's queue: the jobs no worker has taken yet."""
    import pika
    import pika.exceptions

    try:
        connection = pika.BlockingConnection(pika.URLParameters(broker_url))
    except pika.exceptions.AMQPError:
        return None
    try:
        return connection.channel().queue_declare(chat_queue(model), passive=True).method.message_count
    except pika.exceptions.AMQPError:
        return None
    finally:
        if connection.is_open:
            connection.close()


async def measure_streams(stack: Stack, args: argparse.Namespace) -> dict:
    target = Target.from_url(stack.url, stack.api_key)
    # Unmeasured first requests: the web process starts its runtime and allocates its pools.
    warmup = await run_load(target, LoadSpec(model=BENCHMARK_MODEL, concurrency=10, requests=20, max_tokens=1,
                                             stream=True))
    if warmup.errors:
        raise StackError(f"warm-up requests failed: {dict(warmup.error_counts())}")
    await asyncio.sleep(1.0)
    before = web_rss(stack)
    print(f"  before: web worker RSS {format_mib(before['workers_kib'])}, fds {before['worker_fds']}", flush=True)

    spec = LoadSpec(model=BENCHMARK_MODEL, stream=True, max_tokens=args.max_tokens, include_usage=False)
    connections = [HttpConnection(target) for _ in range(args.streams)]
    counts = StreamCounts()
    tasks: list[asyncio.Task] = []
    try:
        started = time.monotonic()
        await asyncio.gather(*(c.connect() for c in connections))
        tasks = [asyncio.create_task(hold_stream(c, spec.request_bytes(target, i), counts))
                 for i, c in enumerate(connections)]
        expected_running = min(args.streams, args.max_batch_size)
        # In: every request sent, the batch running, and the web process holding every connection.
        while (counts.sent < args.streams or counts.running < expected_running
               or web_rss(stack)["worker_fds"] < before["worker_fds"] + args.streams):
            if counts.errors or time.monotonic() - started > args.open_timeout:
                raise StackError(f"streams did not all open within {args.open_timeout:.0f}s: sent {counts.sent}, "
                                 f"running {counts.running}, errors {counts.errors} ({counts.first_error})")
            stack.check_alive()
            await asyncio.sleep(0.25)
        opened_in = time.monotonic() - started
        print(f"  {args.streams} streams in after {opened_in:.1f}s ({counts.running} running); "
              f"holding {args.hold:.0f}s", flush=True)
        samples = []
        hold_until = time.monotonic() + args.hold
        while True:
            await asyncio.sleep(1.0)
            stack.check_alive()
            samples.append(web_rss(stack))
            if time.monotonic() >= hold_until:
                break
        queued = await asyncio.to_thread(queued_jobs, stack.config.broker_url, BENCHMARK_MODEL)
        held = samples[-1]
        peak = max(s["workers_kib"] for s in samples)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for connection in connections:
            connection.close()
    await asyncio.sleep(3.0)  # the web process notices the closed connections and cancels the jobs
    after = web_rss(stack)
    delta = held["workers_kib"] - before["workers_kib"]
    return {
        "streams": args.streams, "running": counts.running, "queued_in_rabbitmq": queued,
        "errors": counts.errors, "first_error": counts.first_error,
        "open_seconds": round(opened_in, 2), "hold_seconds": args.hold,
        "web_workers": len(before["per_worker_kib"]),
        "rss_before_kib": before["workers_kib"], "rss_held_kib": held["workers_kib"], "rss_held_peak_kib": peak,
        "rss_after_close_kib": after["workers_kib"], "rss_delta_kib": delta,
        "rss_per_stream_kib": round(delta / args.streams, 1),
        "master_rss_kib": held["master_kib"], "worker_fds_before": before["worker_fds"],
        "worker_fds_held": held["worker_fds"],
    }


def measure_model_worker(stack: Stack, model: str) -> dict:
    worker = stack.workers[0]
    time.sleep(3.0)  # idle after loading: let allocations from start-up settle
    loaded = rss_kib(worker.pid)
    result = asyncio.run(run_load(Target.from_url(stack.url, stack.api_key),
                                  LoadSpec(model=model, concurrency=1, requests=1, max_tokens=16, seed=1)))
    time.sleep(1.0)
    stack.check_alive()
    return {"model": model, "worker_rss_idle_kib": loaded, "worker_rss_after_request_kib": rss_kib(worker.pid),
            "errors": result.errors}


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    install_signal_handlers()
    command = shlex.join([sys.executable, "-m", "bench.memory", *(sys.argv[1:] if argv is None else argv)])
    print(f"command: {command}", flush=True)
    load_before = host_load()
    print(f"host before: {describe_load(load_before)}", flush=True)
    # Queued streams must not time out while held: the queue timeout outlasts the whole run.
    streams_config = StackConfig.from_args(
        args, (BENCHMARK_MODEL,), web_concurrency=1, max_batch_size=args.max_batch_size,
        benchmark_step_ms=args.step_ms, extra_env={"LLAMAGATE_QUEUE_TIMEOUT": "900"})
    model_config = StackConfig.from_args(args, (args.model,), web_concurrency=1)
    streams: Optional[dict] = None
    model: Optional[dict] = None
    with exit_on_stack_failure():
        if not args.model_only:
            print(f"part 1 stack: {streams_config.describe()}", flush=True)
            with Stack(streams_config) as stack:
                streams = asyncio.run(measure_streams(stack, args))
        if not args.streams_only:
            print(f"part 2 stack: {model_config.describe()}", flush=True)
            with Stack(model_config) as stack:
                model = measure_model_worker(stack, args.model)

    print()
    rows = []
    if streams is not None:
        label = f"web worker, {streams['streams']} streams"
        rows += [
            ["web worker (gunicorn, gevent), idle", format_mib(streams["rss_before_kib"]), ""],
            [f"{label} open", format_mib(streams["rss_held_kib"]),
             f"{streams['running']} running, {streams['queued_in_rabbitmq']} queued; "
             f"peak {format_mib(streams['rss_held_peak_kib'])}"],
            ["  difference", format_mib(streams["rss_delta_kib"]),
             f"{streams['rss_per_stream_kib']:.1f} KiB per stream"],
            ["web worker, after closing them", format_mib(streams["rss_after_close_kib"]), ""],
            ["gunicorn master", format_mib(streams["master_rss_kib"]), ""],
        ]
    if model is not None:
        rows += [[f"inference worker, {model['model']} loaded, idle",
                  format_mib(model["worker_rss_idle_kib"]), ""],
                 ["inference worker, after one request", format_mib(model["worker_rss_after_request_kib"]), ""]]
    print_table(("process", "VmRSS", "notes"), rows, left=(0, 2))
    errors = (streams or {}).get("errors", 0) + (model or {}).get("errors", 0)
    if streams and streams["first_error"]:
        print(f"first stream error: {streams['first_error']}")
    load_after = host_load()
    print(f"host after: {describe_load(load_after)}")
    print(f"\ncommand: {command}")
    print_json_line({"benchmark": "memory", "command": command, "host_before": load_before,
                     "host_after": load_after,
                     "stacks": {"streams": streams_config.describe(), "model": model_config.describe()},
                     "streams": streams, "model_worker": model, "errors": errors})
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
