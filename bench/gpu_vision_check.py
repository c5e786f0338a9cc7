"""Images on the ExLlamaV3 engine, on a real GPU: a tiny random-weight Qwen2.5-VL built on the
machine (tests/tiny_vlm.py), served through the engine and compared with transformers on the same
weights. Run on the GPU machine; prints one line per check and a JSON summary.

    python -m bench.gpu_vision_check --work /root/gpu [--out vision.json]

Checks: the engine loads the model with vision (its start-up check compares the encoder's feature
counts with the API's image-token rule); the prompt the engine builds is as long as the API counts;
greedy answers for three image pairs equal transformers' token for token; different images give
different answers (the images reach the model); a batch of requests with different images gives
each request the answer it gets alone.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import traceback
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from bench.gpu_check import drive  # noqa: E402
from bench.gpu_models import gpu_settings, spec_for  # noqa: E402
from broker.contracts import SamplingParams  # noqa: E402
from inference_worker.engines import create_engine  # noqa: E402
from inference_worker.engines.base import EngineRequest  # noqa: E402
from shared.chat_tokenizer import ChatTokenizer  # noqa: E402
from shared.image_tokens import image_token_rule  # noqa: E402
from shared.images import DecodedImage  # noqa: E402
from tiny_vlm import build_tiny_qwen25_vl  # noqa: E402

TOKENS = 12
MESSAGES = ({"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is in this picture?"},
                                         {"type": "image"}]},)


def image_pairs():
    """Three pairs of images: flat colours, then noise (which moves a random model's answer)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    noise = lambda w, h: Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))  # noqa: E731
    return [(Image.new("RGB", (640, 480), (200, 30, 30)), Image.new("RGB", (97, 311), (0, 90, 200))),
            (noise(640, 480), Image.new("RGB", (97, 311), (0, 90, 200))),
            (noise(640, 480), noise(97, 311))]


def transformers_answer(model_dir: Path, ids: list[int], images, tokens: int, device: str = "cuda") -> list[int]:
    """Greedy tokens from transformers' Qwen2.5-VL, with the API's counted ids and the model's own
    image processor (the processor writes the same ids: tests/unit/shared/test_image_tokens.py)."""
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    settings = json.loads((model_dir / "preprocessor_config.json").read_text())
    processor = Qwen2VLImageProcessorPil(**{key: settings[key] for key in (
        "min_pixels", "max_pixels", "patch_size", "temporal_patch_size", "merge_size", "image_mean", "image_std")})
    pixels = processor(images=list(images), return_tensors="pt")
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(str(model_dir), dtype=torch.float16).to(device)
    input_ids = torch.tensor([ids], device=device)
    out = model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                         pixel_values=pixels["pixel_values"].to(device, torch.float16),
                         image_grid_thw=pixels["image_grid_thw"].to(device), max_new_tokens=tokens, do_sample=False)
    del model
    if device == "cuda":
        torch.cuda.empty_cache()
    return out[0, len(ids):].tolist()


def run(work: Path, report: dict) -> None:
    model_dir = work / "tiny-qwen25-vl"
    if not (model_dir / "config.json").exists():
        build_tiny_qwen25_vl(model_dir)
    tokenizer = ChatTokenizer.from_directory(model_dir)
    rule = image_token_rule(model_dir)
    spec = spec_for(model_dir, "exllamav3", "tiny-qwen25-vl", context_length=4096)
    spec = dataclasses.replace(spec, capabilities=spec.capabilities | {"vision"})
    engine = create_engine(spec, gpu_settings(gpu_cache_tokens=32768), tokenizer)
    engine.load()  # runs the encoder-versus-rule check: a disagreement raises here
    checks = report.setdefault("checks", {})

    def check(name, ok, detail):
        checks[name] = {"ok": bool(ok), "detail": detail}
        print(f"[vision] {'PASS' if ok else 'FAIL'} {name}: {str(detail)[:400]}", flush=True)

    check("loads_with_vision", engine.vision is not None, rule.describe())
    pairs = image_pairs()
    prompts = [engine.prompt(MESSAGES, (), [DecodedImage(image, "PNG") for image in pair]) for pair in pairs]

    def request(k: int) -> EngineRequest:
        return EngineRequest(f"v{k}", prompts[k].ids, SamplingParams(temperature=0.0, max_tokens=TOKENS),
                             model_inputs=prompts[k].model_inputs)

    text = tokenizer.render(MESSAGES, content_parts=True)
    counted = [len(tokenizer.encode(rule.expand(text, [(*image.size, "auto") for image in pair]))) for pair in pairs]
    check("prompt_length_is_the_api_count", [len(p.ids) for p in prompts] == counted, counted)

    alone = []
    for k in range(len(pairs)):
        out, _ = drive(engine, [request(k)])
        alone.append(out[f"v{k}"]["text"][0])
    reference = [tokenizer.decode(transformers_answer(model_dir, prompts[k].ids, pairs[k], TOKENS))
                 for k in range(len(pairs))]
    check("greedy_matches_transformers", alone == reference, {"engine": alone, "transformers": reference})
    check("images_change_the_answer", len(set(alone)) > 1, alone)
    together, most = drive(engine, [request(k) for k in range(len(pairs))])
    batched = [together[f"v{k}"]["text"][0] for k in range(len(pairs))]
    check("batched_answers_equal_answers_alone", batched == alone and most == len(pairs),
          {"batched": batched, "most_running": most})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--work", required=True, type=Path)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    report: dict = {}
    try:
        run(args.work, report)
    except Exception as exc:  # noqa: BLE001 - the summary says what broke
        report["error"] = f"{type(exc).__name__}: {exc}\n{traceback.format_exc()[-3000:]}"
        print(f"[vision] ERROR {report['error']}", flush=True)
    print(json.dumps(report, indent=1, default=str)[-6000:])
    if args.out:
        args.out.write_text(json.dumps(report, indent=1, default=str))


if __name__ == "__main__":
    main()
