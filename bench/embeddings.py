"""Benchmark: embeddings per second, served through LlamaGate versus sentence-transformers in-process.

Starts an isolated stack (one web process, one embeddings worker serving all-MiniLM-L6-v2) and
embeds the same 1,000 short sentences three ways, each round in turn, so that whatever else runs
on the machine weighs on all three alike:

- direct: `SentenceTransformer.encode` in this process, in batches of the worker's batch size, with
  PyTorch's threads at one per core (`--direct-threads`);
- served 10 x 100: ten concurrent requests of 100 sentences each, through the openai SDK;
- served 1000 x 1: a thousand concurrent single-sentence requests, through the openai SDK.

Throughput is sentences / wall time of the whole set; the figure per mode is the median over the
rounds. Goal: served 10 x 100 reaches at least 80% of direct.

    .venv/bin/python -m bench.embeddings               # 3 rounds after a warm-up
    .venv/bin/python -m bench.embeddings --rounds 1    # a quick smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Optional

if __package__ in (None, ""):  # run as `python bench/embeddings.py`: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from bench.report import describe_load, host_load, print_json_line, print_table
from bench.stack import (Stack, StackConfig, add_stack_arguments, check_stack_arguments, exit_on_stack_failure,
                         install_signal_handlers)

DEFAULT_MODEL = "all-minilm-l6-v2"
DEFAULT_VHOST = "llamagate-bench-emb"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/12"
RATIO_GOAL = 0.8

SUBJECTS = ["The old fisherman", "A curious child", "Our new neighbour", "The city council", "My sister",
            "The orchestra", "A stray dog", "The software team", "An astronaut", "The baker down the street"]
VERBS = ["painted", "repaired", "discovered", "sold", "described", "photographed", "ignored", "celebrated",
         "measured", "forgot"]
OBJECTS = ["a wooden boat", "the broken clock in the hall", "an ancient map of the northern coast",
           "three jars of honey", "the results of last year's survey", "a quiet garden behind the station",
           "the longest bridge in the region", "a letter from an unknown sender", "the first snow",
           "a recipe for lemon cake"]
ENDINGS = ["", " yesterday", " before sunrise on Monday", " with great care", " during the long summer holidays"]


def sentences(count: int) -> list[str]:
    """`count` distinct short sentences (about 6 to 20 tokens), always the same ones."""
    out = []
    for n in range(count):
        out.append(f"{SUBJECTS[n % 10]} {VERBS[(n // 10) % 10]} {OBJECTS[(n // 100) % 10]}"
                   f"{ENDINGS[(n * 7) % 5]}.")
    return out


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.embeddings", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--sentences", type=int, default=1000, help="sentences per measurement")
    parser.add_argument("--request-size", type=int, default=100, help="inputs per request in the batched mode")
    parser.add_argument("--rounds", type=int, default=3, help="measurements of each mode, interleaved")
    parser.add_argument("--batch-size", type=int, default=64,
                        help="LLAMAGATE_EMBEDDINGS_BATCH_SIZE of the worker, and the direct batch size")
    parser.add_argument("--batch-wait-ms", type=float, default=5.0, help="LLAMAGATE_EMBEDDINGS_BATCH_WAIT_MS")
    parser.add_argument("--worker-threads", type=int, default=None,
                        help="LLAMAGATE_EMBEDDINGS_TORCH_THREADS of the worker (default: LlamaGate's default)")
    parser.add_argument("--direct-threads", type=int, default=0,
                        help="PyTorch threads of the direct run; 0: one per core")
    parser.add_argument("--model", default=DEFAULT_MODEL)
    add_stack_arguments(parser)
    parser.set_defaults(vhost=DEFAULT_VHOST, redis_url=DEFAULT_REDIS_URL)
    args = parser.parse_args(argv)
    check_stack_arguments(parser, args)
    return args


def load_direct_model(model_id: str, threads: int):
    """The same model the worker loads, as an application would use it in-process."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from sentence_transformers import SentenceTransformer

    from shared.registry import ModelRegistry
    from shared.settings import Settings

    settings = Settings.from_env()
    torch.set_num_threads(threads or os.cpu_count() or 1)
    spec = ModelRegistry.load(settings.models_file).get(model_id)
    return SentenceTransformer(str(spec.weights.resolve()), device="cpu", local_files_only=True)


def run_direct(model, texts: list[str], batch_size: int) -> tuple[float, np.ndarray]:
    started = time.perf_counter()
    vectors = model.encode(texts, batch_size=batch_size, convert_to_numpy=True)
    return time.perf_counter() - started, vectors


async def run_served(client, model_id: str, texts: list[str], request_size: int) -> tuple[float, np.ndarray]:
    """All requests at once; the openai SDK's default (base64, decoded by the SDK)."""
    chunks = [texts[i:i + request_size] for i in range(0, len(texts), request_size)]
    started = time.perf_counter()
    responses = await asyncio.gather(*(
        client.embeddings.create(model=model_id, input=chunk if request_size > 1 else chunk[0])
        for chunk in chunks))
    elapsed = time.perf_counter() - started
    vectors = np.array([item.embedding for response in responses for item in response.data], dtype=np.float32)
    return elapsed, vectors


def min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.min(np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))))


async def measure(args: argparse.Namespace, stack: Stack, model) -> dict:
    import httpx
    from openai import AsyncOpenAI

    texts = sentences(args.sentences)
    client = AsyncOpenAI(base_url=f"{stack.url}/v1", api_key=stack.api_key, max_retries=0, timeout=300,
                         http_client=httpx.AsyncClient(limits=httpx.Limits(max_connections=args.sentences,
                                                                           max_keepalive_connections=args.sentences)))
    modes = {"direct": lambda: asyncio.to_thread(run_direct, model, texts, args.batch_size),
             f"served {len(texts) // args.request_size} x {args.request_size}":
                 lambda: run_served(client, args.model, texts, args.request_size),
             f"served {len(texts)} x 1": lambda: run_served(client, args.model, texts, 1)}
    seconds: dict[str, list[float]] = {name: [] for name in modes}
    reference = None
    agreement: dict[str, float] = {}
    loads = [host_load()]
    for round_ in range(args.rounds + 1):  # round 0 warms everything up and is not counted
        for name, run in modes.items():
            elapsed, vectors = await run()
            if name == "direct":
                reference = vectors
            else:
                agreement[name] = min(agreement.get(name, 1.0), min_cosine(vectors, reference))
            if round_:
                seconds[name].append(elapsed)
                print(f"round {round_}: {name:>16}: {len(texts) / elapsed:8.1f} embeddings/s", file=sys.stderr)
        loads.append(host_load())
    await client.close()
    rates = {name: len(texts) / statistics.median(values) for name, values in seconds.items()}
    return {"rates": rates, "seconds": seconds, "agreement": agreement, "loads": loads}


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    install_signal_handlers()
    extra_env = {"LLAMAGATE_EMBEDDINGS_MODELS": args.model, "LLAMAGATE_EMBEDDINGS_METRICS_PORT": "0",
                 "LLAMAGATE_EMBEDDINGS_BATCH_SIZE": str(args.batch_size),
                 "LLAMAGATE_EMBEDDINGS_BATCH_WAIT_MS": str(args.batch_wait_ms),
                 "LLAMAGATE_LOG_LEVEL": "WARNING"}
    if args.worker_threads is not None:
        extra_env["LLAMAGATE_EMBEDDINGS_TORCH_THREADS"] = str(args.worker_threads)
    config = StackConfig.from_args(args, (args.model,), worker_command="embeddings-worker", extra_env=extra_env)
    model = load_direct_model(args.model, args.direct_threads)
    with exit_on_stack_failure(), Stack(config) as stack:
        result = asyncio.run(measure(args, stack, model))
    rates = result["rates"]
    direct = rates["direct"]
    batched = next(name for name in rates if name.startswith("served") and not name.endswith("x 1"))
    rows = [(name, f"{rate:.1f}", f"{rate / direct:.0%}",
             "-" if name == "direct" else f"{result['agreement'][name]:.6f}") for name, rate in rates.items()]
    import torch

    from shared.settings import Settings

    worker_threads = Settings.from_env({**os.environ, **extra_env}).embeddings_torch_threads or os.cpu_count()
    print(f"\n{args.sentences} short sentences, {args.rounds} rounds (median), model {args.model}, "
          f"worker batch size {args.batch_size}, gathering {args.batch_wait_ms} ms, torch threads: "
          f"direct {torch.get_num_threads()}, worker {worker_threads}")
    print(f"host: {describe_load(result['loads'][0])} before; {describe_load(result['loads'][-1])} after\n")
    print_table(["mode", "embeddings/s", "of direct", "min cosine vs direct"], rows)
    ratio = rates[batched] / direct
    verdict = "met" if ratio >= RATIO_GOAL else "NOT met"
    print(f"\n{batched} / direct = {ratio:.2f} (goal >= {RATIO_GOAL}: {verdict})")
    print_json_line({"benchmark": "embeddings", "sentences": args.sentences, "rounds": args.rounds,
                     "batch_size": args.batch_size, "batch_wait_ms": args.batch_wait_ms,
                     "torch_threads": {"direct": torch.get_num_threads(), "worker": worker_threads},
                     "embeddings_per_second": {k: round(v, 1) for k, v in rates.items()},
                     "ratio_batched_to_direct": round(ratio, 3), "goal": RATIO_GOAL,
                     "min_cosine": result["agreement"], "host": result["loads"],
                     "stack": config.describe()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
