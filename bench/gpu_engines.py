"""Benchmark: the ExLlamaV3 engine on a GPU, through LlamaGate's worker loop and bare, in one run.

Model: random weights with Llama-3.1-8B's shapes in FP16 (bench/gpu_models.py; made on the GPU
machine, about 16 GB). Every request: a 512-token prompt (its own random words), 256 tokens
generated greedily (the model cannot end early: see gpu_models), all requests sent at once.

- `bare`: ExLlamaV3's generator driven directly (enqueue every job, iterate until done);
- `llamagate`: the same generator inside LlamaGate's worker: the generation loop thread, the
  engine (admission, jobs, result translation), and every step's events published to a real Redis,
  read by a subscriber in another process that stands for the API (its arrival times are measured).

Printed per concurrency (1, 8, 32, 64): aggregate tokens/s (generated tokens / wall time from
submission to the last token) and time to first token p50; the ratio llamagate/bare; single-stream
decode speed against the memory-bandwidth limit (bytes read per token / the device-to-device copy
bandwidth measured in the same run); and the concurrency-64 aggregate over single-stream.
Goals (issue 9): llamagate >= 95% of bare at every concurrency; single-stream decode >= 70% of
the bandwidth limit; concurrency-64 aggregate >= 20x single-stream.

    python -m bench.gpu_engines --work /root/gpu --redis-url redis://127.0.0.1:6390/0 [--out r.json]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import random
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.gpu_models import LLAMA_31_8B, gpu_settings, random_llama_dir, spec_for  # noqa: E402

CHANNEL = "llg:events:gpu-bench"
PROMPT_TOKENS = 512
GENERATED = 256


def measure_bandwidth() -> float:
    """Device-to-device copy, bytes read plus bytes written per second."""
    import torch

    src = torch.randn(1 << 30, device="cuda", dtype=torch.float16)  # 2 GiB
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(10):
        start.record()
        dst.copy_(src)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1000)
    bytes_moved = 2 * src.numel() * src.element_size()
    del src, dst
    torch.cuda.empty_cache()
    return bytes_moved / statistics.median(times)


def prompts(count: int, seed: int) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(1000, 128000) for _ in range(PROMPT_TOKENS)] for _ in range(count)]


def run_bare(generator, prompt_ids: list[list[int]], generated: int) -> dict:
    import torch
    from exllamav3 import Job
    from exllamav3.generator.sampler import ArgmaxSampler

    jobs = [Job(input_ids=torch.tensor([ids]), max_new_tokens=generated, sampler=ArgmaxSampler(),
                stop_conditions=[], identifier=k) for k, ids in enumerate(prompt_ids)]
    first, last, tokens = {}, {}, 0
    started = time.perf_counter()
    generator.enqueue(jobs)
    while generator.num_remaining_jobs():
        for result in generator.iterate():
            if result.get("stage") != "streaming":
                continue
            ids = result.get("token_ids")
            now = time.perf_counter()
            if ids is not None:
                tokens += ids.shape[-1]
                first.setdefault(result["identifier"], now)
            if result.get("eos"):
                last[result["identifier"]] = now
    return summarize(started, first, last, tokens)


def profile_decode(generator, steps: int = 48) -> dict:
    """Where one single-stream decode step's time goes: wall time per step, and the GPU and CPU
    operators that take it (torch.profiler)."""
    import torch
    from exllamav3 import Job
    from exllamav3.generator.sampler import ArgmaxSampler

    generator.enqueue(Job(input_ids=torch.tensor([prompts(1, 7)[0]]), max_new_tokens=steps + 40,
                          sampler=ArgmaxSampler(), stop_conditions=[], identifier="profile"))
    for _ in range(20):  # prefill and first tokens
        generator.iterate()
    torch.cuda.synchronize()
    started = time.perf_counter()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU,
                                            torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            generator.iterate()
        torch.cuda.synchronize()
    wall = (time.perf_counter() - started) / steps
    while generator.num_remaining_jobs():
        generator.iterate()
    averages = prof.key_averages()
    print(averages.table(sort_by="self_cuda_time_total", row_limit=14), flush=True)
    print(averages.table(sort_by="self_cpu_time_total", row_limit=8), flush=True)
    gpu_us = sum(e.self_device_time_total for e in averages) / steps
    print(f"profiled decode step: {1000 * wall:.2f} ms wall (under the profiler), GPU busy {gpu_us / 1000:.2f} ms",
          flush=True)
    return {"step_ms_profiled": 1000 * wall, "gpu_ms_per_step": gpu_us / 1000}


def summarize(started: float, first: dict, last: dict, tokens: int) -> dict:
    end = max(last.values())
    ttfts = sorted(t - started for t in first.values())
    decode = [(GENERATED - 1) / (last[k] - first[k]) for k in first if last.get(k, 0) > first[k]]
    return {"tokens": tokens, "seconds": end - started, "tokens_per_s": tokens / (end - started),
            "ttft_p50_ms": 1000 * statistics.median(ttfts), "decode_tokens_per_s_per_stream": statistics.median(decode)}


def _subscriber(redis_url: str, expected: int, ready, results) -> None:
    """Stands for the API process: reads every event batch and notes when tokens arrive."""
    import redis

    from broker.contracts import EventKind, decode_event_batch

    pubsub = redis.Redis.from_url(redis_url).pubsub()
    pubsub.subscribe(CHANNEL)
    ready.set()
    first, last, tokens = {}, {}, 0
    while len(last) < expected:
        message = pubsub.get_message(timeout=1.0)
        if not message or message["type"] != "message":
            continue
        now = time.time()
        for event in decode_event_batch(message["data"]):
            if event.kind == EventKind.DELTA:
                first.setdefault(event.request_id, now)
            elif event.kind == EventKind.DONE:
                last[event.request_id] = now
                tokens += event.usage["completion_tokens"]
            elif event.kind == EventKind.ERROR:
                last[event.request_id] = now
    results.put((first, last, tokens))


def run_llamagate(loop, model_id: str, redis_url: str, prompt_ids: list[list[int]], generated: int, tag: str) -> dict:
    from broker.contracts import GenerationJob, SamplingParams

    ready, results = multiprocessing.Event(), multiprocessing.Queue()
    process = multiprocessing.Process(target=_subscriber, args=(redis_url, len(prompt_ids), ready, results))
    process.start()
    ready.wait(30)
    time.sleep(0.2)
    jobs = [GenerationJob(request_id=f"{tag}-{k}", model=model_id,
                          messages=({"role": "user", "content": " ".join(f"t{i}" for i in ids)},),
                          sampling=SamplingParams(temperature=0.0, max_tokens=generated), reply_to=CHANNEL, n=1,
                          enqueued_at=time.time())
            for k, ids in enumerate(prompt_ids)]
    started_wall, started = time.time(), time.perf_counter()
    for job in jobs:
        loop.submit(job, attempt=1)
    first, last, tokens = results.get(timeout=600)
    process.join(10)
    offset = started - started_wall  # subscriber times are wall-clock: bring them onto perf_counter
    return summarize(started, {k: v + offset for k, v in first.items()}, {k: v + offset for k, v in last.items()},
                     tokens)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6390/0")
    parser.add_argument("-c", "--concurrency", type=int, nargs="+", default=[1, 8, 32, 64])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--profile", action="store_true", help="profile single-stream decode first")
    parser.add_argument("--exl3-bits", type=int, help="decoder weights in EXL3 at this many bits per weight")
    args = parser.parse_args()

    import redis
    import torch

    from broker.event_publisher import EventPublisher
    from inference_worker.engines import create_engine
    from inference_worker.generation_loop import GenerationLoop
    from shared.chat_tokenizer import ChatTokenizer

    multiprocessing.set_start_method("spawn")
    report: dict = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "cuda": torch.version.cuda}
    from importlib.metadata import version
    report["exllamav3"] = version("exllamav3")
    report["bandwidth_bytes_per_s"] = measure_bandwidth()
    print(f"device-to-device copy: {report['bandwidth_bytes_per_s'] / 1e12:.2f} TB/s (read + write)", flush=True)

    started = time.monotonic()
    name = f"exl3-{args.exl3_bits}bpw" if args.exl3_bits else "fp16"
    model_dir = random_llama_dir(args.work / f"llama-3.1-8b-shapes-random-{name}", exl3_bits=args.exl3_bits)
    report["weights"] = name
    report["model_build_s"] = round(time.monotonic() - started, 1)
    files = sum(p.stat().st_size for p in model_dir.glob("*.safetensors"))
    embedding = LLAMA_31_8B["vocab_size"] * LLAMA_31_8B["hidden_size"] * 2
    kv_per_token = 2 * 32 * 8 * 128 * 2
    # One decode step reads every weight but the embedding table (one row), plus the sequence's KV.
    bytes_per_token = files - embedding + kv_per_token * (PROMPT_TOKENS + GENERATED // 2)
    report["bytes_per_token"] = bytes_per_token
    limit = report["bandwidth_bytes_per_s"] / bytes_per_token
    report["bandwidth_limit_tokens_per_s"] = limit

    spec = spec_for(model_dir, "exllamav3", "llama-3.1-8b-shapes", context_length=8192)
    engine = create_engine(spec, gpu_settings(gpu_cache_tokens=98304), ChatTokenizer.from_directory(model_dir))
    started = time.monotonic()
    engine.load()
    report["load_s"] = round(time.monotonic() - started, 1)
    client = redis.Redis.from_url(args.redis_url)
    loop = GenerationLoop(engine, EventPublisher(client), "gpu-bench")
    loop.start()

    if args.profile:
        report["profile"] = profile_decode(engine.generator)

    # Warm-up at every batch size: Triton compiles kernels per shape on first use.
    for c in args.concurrency:
        run_bare(engine.generator, prompts(c, 999), 8)
        run_llamagate(loop, spec.id, args.redis_url, prompts(c, 998), 8, f"warm{c}")

    runs: dict = {}
    for round_ in range(args.rounds):
        for c in args.concurrency:
            for offset, system in enumerate(("bare", "llamagate")):
                # Distinct prompts per system and run: the generator reuses cached prompt pages
                # of earlier jobs, which would favour whichever system ran second.
                batch = prompts(c, 1000 * round_ + 10 * c + offset)
                if system == "bare":
                    result = run_bare(engine.generator, batch, GENERATED)
                else:
                    result = run_llamagate(loop, spec.id, args.redis_url, batch, GENERATED, f"r{round_}c{c}")
                runs.setdefault(f"{system}@{c}", []).append(result)
                print(f"round {round_} c={c:>2} {system:>9}: {result['tokens_per_s']:8.0f} tok/s  "
                      f"TTFT p50 {result['ttft_p50_ms']:7.1f} ms  ({result['tokens']} tokens)", flush=True)
    loop.stop()
    report["runs"] = runs

    def best(system, c):
        return max(runs[f"{system}@{c}"], key=lambda r: r["tokens_per_s"])

    print("\nconcurrency | bare tok/s | llamagate tok/s | ratio | bare TTFT p50 | llamagate TTFT p50")
    table = []
    for c in args.concurrency:
        b, g = best("bare", c), best("llamagate", c)
        ratio = g["tokens_per_s"] / b["tokens_per_s"]
        table.append({"c": c, "bare": b["tokens_per_s"], "llamagate": g["tokens_per_s"], "ratio": ratio,
                      "bare_ttft_ms": b["ttft_p50_ms"], "llamagate_ttft_ms": g["ttft_p50_ms"]})
        print(f"{c:>11} | {b['tokens_per_s']:10.0f} | {g['tokens_per_s']:15.0f} | {ratio:5.3f} | "
              f"{b['ttft_p50_ms']:10.1f} ms | {g['ttft_p50_ms']:10.1f} ms")
    report["table"] = table
    if 1 in args.concurrency:
        single = best("bare", 1)["decode_tokens_per_s_per_stream"]
        single_lg = best("llamagate", 1)["decode_tokens_per_s_per_stream"]
        report["single_stream_decode"] = {"bare": single, "llamagate": single_lg, "limit": limit,
                                          "bare_fraction": single / limit, "llamagate_fraction": single_lg / limit}
        print(f"\nsingle-stream decode: bare {single:.1f} tok/s, llamagate {single_lg:.1f} tok/s; "
              f"bandwidth limit {limit:.1f} tok/s ({bytes_per_token / 1e9:.2f} GB/token at "
              f"{report['bandwidth_bytes_per_s'] / 1e12:.2f} TB/s): {single / limit:.1%} / {single_lg / limit:.1%}")
        if 64 in args.concurrency:
            for system in ("bare", "llamagate"):
                scale = best(system, 64)["tokens_per_s"] / best(system, 1)["tokens_per_s"]
                report[f"scale_64_over_1_{system}"] = scale
                print(f"aggregate c=64 / c=1 ({system}): {scale:.1f}x")
    if args.out:
        args.out.write_text(json.dumps(report, indent=1, default=str))


if __name__ == "__main__":
    main()
