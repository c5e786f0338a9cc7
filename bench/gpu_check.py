"""Correctness of the GPU engines on a real GPU, with SmolLM2-135M-Instruct (converted from the
GGUF the CPU engine serves). Run on the GPU machine; prints one line per check and a JSON summary.

    python -m bench.gpu_check --gguf SmolLM2-135M-Instruct.Q4_1.gguf --work /root/gpu [--out results.json]

Checks, per engine: greedy answer to "What is the capital of France?" (Paris, and the same
tokens as transformers on the same weights), max_tokens -> "length", a stop string, a seeded
n=3 request reproducible, a strict JSON schema, cancellation freeing the generator, 24 requests
running in one batch. ExLlamaV2 without flash-attn: refusal to start, then (explicitly allowed)
one sequence at a time.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.gpu_models import gpu_settings, pad_hidden_dir, request, smollm2_hf_dir, spec_for  # noqa: E402
from inference_worker.engines import create_engine  # noqa: E402
from shared.chat_tokenizer import ChatTokenizer  # noqa: E402
from shared.grammars import json_schema_grammar  # noqa: E402

QUESTION = "What is the capital of France?"
SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
          "required": ["city", "population"], "additionalProperties": False}


def drive(engine, requests, abort_after: dict[str, int] | None = None):
    """Run requests to completion through the engine alone; returns texts, finishes, tokens and
    the most sequences that ran at once."""
    results = {r.request_id: {"text": [""] * r.n, "finish": [None] * r.n, "tokens": [0] * r.n} for r in requests}
    for r in requests:
        engine.add(r)
    most, steps = 0, 0
    while engine.has_work:
        for out in engine.step():
            entry = results[out.request_id]
            entry["text"][out.index] += out.text
            entry["tokens"][out.index] += out.tokens
            if out.finish_reason:
                entry["finish"][out.index] = out.finish_reason
        steps += 1
        most = max(most, engine.running)
        for request_id, after in (abort_after or {}).items():
            if steps == after:
                engine.abort(request_id)
        if steps > 20000:
            raise RuntimeError("engine did not finish")
    return results, most


def transformers_reference(model_dir: Path, prompt_ids: list[int], tokens: int, tokenizer: ChatTokenizer) -> str:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float16).cuda()
    out = model.generate(torch.tensor([prompt_ids], device="cuda"), max_new_tokens=tokens, do_sample=False)
    text = tokenizer.decode(out[0, len(prompt_ids):].tolist())
    del model
    torch.cuda.empty_cache()
    return text


def check_engine(engine_name: str, model_dir: Path, report: dict, batched: bool = True,
                 reference_dir: Path | None = None, **settings) -> None:
    tokenizer = ChatTokenizer.from_directory(model_dir)
    spec = spec_for(model_dir, engine_name, f"smollm2-{engine_name}")
    engine = create_engine(spec, gpu_settings(gpu_cache_tokens=65536 if batched else 0, **settings), tokenizer)
    started = time.monotonic()
    engine.load()
    report["load_s"] = round(time.monotonic() - started, 1)
    checks = report.setdefault("checks", {})

    def check(name, fn):
        try:
            ok, detail = fn()
        except Exception as exc:  # noqa: BLE001 - report and go on to the next check
            ok, detail = False, f"{type(exc).__name__}: {exc}\n{traceback.format_exc()[-1500:]}"
        checks[name] = {"ok": bool(ok), "detail": detail}
        print(f"[{engine_name}] {'PASS' if ok else 'FAIL'} {name}: {str(detail)[:400]}", flush=True)

    def paris():
        r = request(engine, "paris", QUESTION, max_tokens=24)
        out, _ = drive(engine, [r])
        text = out["paris"]["text"][0]
        reference = transformers_reference(reference_dir or model_dir, r.prompt_ids, out["paris"]["tokens"][0], tokenizer)
        return "Paris" in text and text == reference, {"engine": text, "transformers": reference,
                                                       "finish": out["paris"]["finish"][0],
                                                       "tokens": out["paris"]["tokens"][0]}
    check("greedy_paris_matches_transformers", paris)

    def length():
        out, _ = drive(engine, [request(engine, "len", "Tell me a long story about a dragon.", max_tokens=5)])
        return out["len"]["finish"] == ["length"] and out["len"]["tokens"] == [5], out["len"]
    check("max_tokens_length", length)

    def stop_string():
        out, _ = drive(engine, [request(engine, "stop", QUESTION, max_tokens=24, stop=("Paris",))])
        e = out["stop"]
        return "Paris" not in e["text"][0] and e["finish"] == ["stop"], e
    check("stop_string", stop_string)

    def cancel():
        r = request(engine, "cancel", "Tell me a long story about a dragon.", max_tokens=400,
                    temperature=0.8, seed=1)
        out, _ = drive(engine, [r], abort_after={"cancel": 10})
        left = engine.generator.num_remaining_jobs()
        return left == 0 and engine.running == 0 and 0 < out["cancel"]["tokens"][0] < 400, \
            {"tokens_before_cancel": out["cancel"]["tokens"][0], "generator_jobs_left": left}
    check("cancel_frees_generator", cancel)

    if batched:
        def seeded_n3():
            runs = [drive(engine, [request(engine, f"seed{k}", "Write a short poem about the sea.", n=3,
                                           temperature=1.0, top_p=0.95, seed=42, max_tokens=24)])[0][f"seed{k}"]
                    for k in range(2)]
            texts = runs[0]["text"]
            return runs[0]["text"] == runs[1]["text"] and len(set(texts)) > 1, {"run1": texts, "run2": runs[1]["text"]}
        check("seeded_n3_reproducible", seeded_n3)

        def strict_schema():
            grammar = json_schema_grammar(SCHEMA, strict=True)
            out, _ = drive(engine, [request(engine, "json", "Give me a city and its population as JSON.",
                                            grammar=grammar, max_tokens=64)])
            text = out["json"]["text"][0]
            value = json.loads(text)
            ok = set(value) == {"city", "population"} and isinstance(value["city"], str) \
                and isinstance(value["population"], int) and out["json"]["finish"] == ["stop"]
            return ok, {"text": text, "finish": out["json"]["finish"]}
        check("strict_json_schema", strict_schema)

        def batch24():
            reqs = [request(engine, f"b{k}", f"Count from {k} to {k + 20}.", max_tokens=48) for k in range(24)]
            out, most = drive(engine, reqs)
            done = sum(1 for r in out.values() if r["finish"][0] is not None)
            return most >= 24 and done == 24, {"most_running": most, "finished": done}
        check("batch_of_24_runs_together", batch24)


def free_gpu_memory() -> None:
    import gc

    import torch
    gc.collect()
    torch.cuda.empty_cache()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gguf", required=True, type=Path)
    parser.add_argument("--work", required=True, type=Path)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--engines", nargs="+", default=["exllamav3", "exllamav2"])
    parser.add_argument("--padded", action="store_true", help="check on the hidden-size-padded copy")
    args = parser.parse_args()
    model_dir = smollm2_hf_dir(args.gguf, args.work / "smollm2-hf")
    reference_dir = None
    if args.padded:
        model_dir, reference_dir = pad_hidden_dir(model_dir, args.work / "smollm2-hf-pad128"), model_dir
    report: dict = {}
    for name in args.engines:
        entry = report.setdefault(name, {})
        try:
            if name == "exllamav2":
                from exllamav2 import attn
                entry["flash_attn_paged"] = attn.has_flash_attn_with_paged
                if not attn.has_flash_attn_with_paged:
                    try:
                        check_engine(name, model_dir, {}, batched=True)
                        entry["refused_without_flash_attn"] = False
                    except Exception as exc:  # noqa: BLE001
                        entry["refused_without_flash_attn"] = f"{type(exc).__name__}: {exc}"
                    print(f"[exllamav2] refusal without flash-attn: {entry['refused_without_flash_attn']}", flush=True)
                    check_engine(name, model_dir, entry, batched=False, reference_dir=reference_dir,
                                 exllamav2_allow_unbatched=True)
                    continue
            try:
                check_engine(name, model_dir, entry)
            except RuntimeError as exc:
                if name != "exllamav3" or "must match the size" not in str(exc):
                    raise
                # ExLlamaV3 cannot run FP16 models whose hidden size is not a multiple of 128
                # (SmolLM2-135M: 576): the same function, zero-padded to 640 (bench/gpu_models.py).
                entry["unpadded_error"] = f"{type(exc).__name__}: {exc}"
                print(f"[exllamav3] unpadded model failed ({exc}); trying the zero-padded one", flush=True)
                check_engine(name, pad_hidden_dir(model_dir, args.work / "smollm2-hf-pad128"), entry,
                             reference_dir=model_dir)
        except Exception as exc:  # noqa: BLE001
            entry["error"] = f"{type(exc).__name__}: {exc}\n{traceback.format_exc()[-3000:]}"
            print(f"[{name}] ERROR {entry['error']}", flush=True)
        free_gpu_memory()  # the engine checked last is garbage now: give its memory back
    print(json.dumps(report, indent=1, default=str)[-6000:])
    if args.out:
        args.out.write_text(json.dumps(report, indent=1, default=str))


if __name__ == "__main__":
    main()
