"""Models for the GPU checks and benchmarks, made on the GPU machine itself (no hub there).

- `smollm2_hf_dir`: SmolLM2-135M-Instruct, converted from the GGUF the CPU engine serves.
- `random_llama_dir`: a random-weight model with Llama-3.1-8B's shapes, in FP16. Its weights'
  values do not change the speed. The output rows of its end-of-sequence tokens are zero, so
  greedy decoding never picks them (the max of 128k random logits is far above 0) and every
  request generates exactly the tokens it asks for. Its tokenizer is a word-level one with one
  word per id ("t0" ... "t128255") and a chat template that is just the messages' text, so a
  prompt of N words is exactly N tokens.
"""

from __future__ import annotations

import json
from pathlib import Path

from broker.contracts import SamplingParams
from inference_worker.engines.base import EngineRequest
from shared.registry import ModelSpec, Pricing, WeightsSource
from shared.settings import Settings

LLAMA_31_8B = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096,
    "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32,
    "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 128256, "max_position_embeddings": 131072,
    "rms_norm_eps": 1e-5, "rope_theta": 500000.0, "hidden_act": "silu", "tie_word_embeddings": False,
    "bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009], "torch_dtype": "float16",
    "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                     "original_max_position_embeddings": 8192, "rope_type": "llama3"},
}
WORD_TEMPLATE = "{% for message in messages %}{{ message['content'] }}{% endfor %}"


def spec_for(model_dir: Path, engine: str, model_id: str, context_length: int = 8192) -> ModelSpec:
    source = WeightsSource(format="hf", path=str(model_dir))
    return ModelSpec(id=model_id, engine=engine, owned_by="bench", created=0, context_length=context_length,
                     capabilities=frozenset({"chat", "json", "tools"}), weights=source, tokenizer=source,
                     pricing=Pricing(1, 1))


def gpu_settings(**overrides) -> Settings:
    return Settings(**{"max_batch_size": 128, "log_format": "text", **overrides})


def request(engine, request_id: str, content: str, n: int = 1, grammar: str | None = None,
            **sampling) -> EngineRequest:
    prompt = engine.prompt_ids(({"role": "user", "content": content},))
    return EngineRequest(request_id, prompt, SamplingParams(**{"temperature": 0.0, "max_tokens": 32, **sampling}),
                         n=n, grammar=grammar)


def smollm2_hf_dir(gguf: Path, out_dir: Path) -> Path:
    if not (out_dir / "config.json").exists():
        from inference_worker.convert_gguf import convert_gguf
        convert_gguf(gguf, out_dir)
    return out_dir


def random_llama_dir(out_dir: Path, shapes: dict = LLAMA_31_8B, shard_bytes: int = 4 << 30) -> Path:
    """Write the random model (about 16 GB for the 8B shapes); done once per machine."""
    if (out_dir / "model.safetensors.index.json").exists():
        return out_dir
    import torch
    from safetensors.torch import save_file

    out_dir.mkdir(parents=True, exist_ok=True)
    h, i, v = shapes["hidden_size"], shapes["intermediate_size"], shapes["vocab_size"]
    q = shapes["num_attention_heads"] * shapes["head_dim"]
    kv = shapes["num_key_value_heads"] * shapes["head_dim"]
    tensors: list[tuple[str, tuple[int, ...]]] = [("model.embed_tokens.weight", (v, h))]
    for layer in range(shapes["num_hidden_layers"]):
        p = f"model.layers.{layer}."
        tensors += [(p + "input_layernorm.weight", (h,)), (p + "post_attention_layernorm.weight", (h,)),
                    (p + "self_attn.q_proj.weight", (q, h)), (p + "self_attn.k_proj.weight", (kv, h)),
                    (p + "self_attn.v_proj.weight", (kv, h)), (p + "self_attn.o_proj.weight", (h, q)),
                    (p + "mlp.gate_proj.weight", (i, h)), (p + "mlp.up_proj.weight", (i, h)),
                    (p + "mlp.down_proj.weight", (h, i))]
    tensors += [("model.norm.weight", (h,)), ("lm_head.weight", (v, h))]
    eos = shapes["eos_token_id"]
    generator = torch.Generator(device="cuda").manual_seed(0)
    weight_map, shard, shard_size, index = {}, {}, 0, 0

    def flush():
        nonlocal shard, shard_size, index
        if shard:
            name = f"model-{index:05d}.safetensors"
            save_file(shard, str(out_dir / name), metadata={"format": "pt"})
            weight_map.update({key: name for key in shard})
            shard, shard_size, index = {}, 0, index + 1

    for name, shape in tensors:
        if len(shape) == 1:
            tensor = torch.ones(shape, dtype=torch.float16)
        else:
            tensor = (torch.randn(shape, device="cuda", dtype=torch.float16, generator=generator) * 0.02).cpu()
        if name == "lm_head.weight":
            tensor[eos] = 0  # greedy decoding never ends early: fixed-length generations
        shard[name] = tensor
        shard_size += tensor.numel() * 2
        if shard_size >= shard_bytes:
            flush()
    flush()
    (out_dir / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    (out_dir / "config.json").write_text(json.dumps(shapes, indent=1))
    _write_word_tokenizer(out_dir, v, eos)
    return out_dir


def _write_word_tokenizer(out_dir: Path, vocab_size: int, eos: list[int]) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers, decoders

    tokenizer = Tokenizer(models.WordLevel({f"t{n}": n for n in range(vocab_size)}, unk_token="t0"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    tokenizer.save(str(out_dir / "tokenizer.json"))
    (out_dir / "tokenizer_config.json").write_text(json.dumps({
        "chat_template": WORD_TEMPLATE, "eos_token": f"t{eos[-1]}", "bos_token": f"t{LLAMA_31_8B['bos_token_id']}",
        "tokenizer_class": "PreTrainedTokenizerFast"}))
    (out_dir / "generation_config.json").write_text(json.dumps({"eos_token_id": eos}))


def pad_hidden_dir(source: Path, out_dir: Path, multiple: int = 128) -> Path:
    """The same Llama model with its hidden size zero-padded to a multiple of `multiple`.

    ExLlamaV3 pads the hidden dimension of unquantized (FP16) linear layers to 128 and fails on
    models whose hidden size is not a multiple of it (SmolLM2-135M: 576). Zero columns in every
    input projection and the embeddings, zero rows in every output projection, and RMSNorm
    weights scaled by sqrt(h / H) (with eps scaled by h / H) compute exactly the same function:
    the padded lanes stay zero through the residual stream."""
    if (out_dir / "config.json").exists():
        return out_dir
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    config = json.loads((source / "config.json").read_text())
    h = config["hidden_size"]
    padded = -(-h // multiple) * multiple
    scale = (h / padded) ** 0.5
    tensors = load_file(str(source / "model.safetensors"))
    out = {}
    for name, tensor in tensors.items():
        if name.endswith("norm.weight"):
            tensor = torch.nn.functional.pad(tensor.float() * scale, (0, padded - h)).to(tensor.dtype)
        elif name.endswith(("o_proj.weight", "down_proj.weight")):
            tensor = torch.nn.functional.pad(tensor, (0, 0, 0, padded - h))  # rows: the hidden output
        elif tensor.dim() == 2 and tensor.shape[1] == h:
            tensor = torch.nn.functional.pad(tensor, (0, padded - h))  # columns: the hidden input
        out[name] = tensor.contiguous()
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file(out, str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    config.update(hidden_size=padded, rms_norm_eps=config["rms_norm_eps"] * h / padded)
    (out_dir / "config.json").write_text(json.dumps(config, indent=2))
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json"):
        if (source / name).exists():
            shutil.copy(source / name, out_dir / name)
    return out_dir
