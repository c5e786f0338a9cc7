"""What the GPU engines share before any generator exists: the CUDA check and KV cache sizing.

Nothing here imports a GPU library at module level, so the CPU build can import and test it.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

# Memory the forward pass needs beside weights and cache: activations of one prefill chunk, the
# logits of a full batch, the sampler's buffers. Generous on purpose: running out mid-step fails
# every running job, a slightly smaller cache only queues a few more.
ACTIVATION_RESERVE_BYTES = 3 * 1024**3


class GpuUnavailableError(RuntimeError):
    """The engine needs a CUDA GPU (and its Python packages) that this machine does not have."""


def require_cuda(engine: str, package: str) -> None:
    """Fail at start-up, with what to do about it, when a GPU engine cannot run here."""
    if importlib.util.find_spec(package) is None:
        raise GpuUnavailableError(
            f"the {engine} engine needs the {package!r} package: install LlamaGate with the GPU extra "
            f"(pip install 'llamagate[gpu]') on a machine with an NVIDIA GPU and a CUDA build of PyTorch")
    import torch

    if not torch.cuda.is_available():
        raise GpuUnavailableError(
            f"the {engine} engine needs an NVIDIA GPU, and PyTorch sees none (torch {torch.__version__}, "
            f"CUDA build: {torch.version.cuda or 'no'}; CUDA_VISIBLE_DEVICES decides which GPU a worker uses). "
            f"Serve this model from a GPU machine, or point the registry at a CPU engine.")


@dataclass(frozen=True)
class KvShape:
    """What one token costs in the KV cache."""

    layers: int
    kv_heads: int
    head_dim: int
    bytes_per_value: int = 2  # FP16

    @property
    def bytes_per_token(self) -> int:
        return 2 * self.layers * self.kv_heads * self.head_dim * self.bytes_per_value  # K and V


def cache_tokens(free_bytes: int, kv: KvShape, page_size: int, fraction: float,
                 context_length: int, configured: int = 0) -> int:
    """Tokens of KV cache for a worker: `configured` when set, else `fraction` of the memory left
    beside the activation reserve, in whole pages. Raises when not even one full-length request
    fits: a worker that could never run a long request must not start."""
    if configured:
        tokens = configured
    else:
        usable = int((free_bytes - ACTIVATION_RESERVE_BYTES) * fraction)
        tokens = max(usable, 0) // kv.bytes_per_token
    tokens = tokens // page_size * page_size
    needed = -(-context_length // page_size) * page_size
    if tokens < needed:
        raise GpuUnavailableError(
            f"the KV cache would hold {tokens} tokens, fewer than one request of the model's full context "
            f"({context_length} tokens, {needed * kv.bytes_per_token / 2**30:.1f} GiB): use a GPU with more "
            f"free memory, a smaller model, or a registry entry with a shorter context_length")
    return tokens


def weights_bytes(directory: Path) -> int:
    """Bytes of the model's weight files: what loading them will take from the GPU."""
    return sum(p.stat().st_size for p in Path(directory).glob("*.safetensors"))


def pages_for(tokens: int, page_size: int) -> int:
    return -(-tokens // page_size)


def kv_shape_of(directory: Path) -> KvShape:
    """The KV cache shape of an HF-format model directory, from its config.json."""
    import json

    config = json.loads((Path(directory) / "config.json").read_text())
    config = config.get("text_config", config)  # vision-language models nest the language model's
    heads = config["num_attention_heads"]
    head_dim = config.get("head_dim") or config["hidden_size"] // heads
    return KvShape(layers=config["num_hidden_layers"], kv_heads=config.get("num_key_value_heads", heads),
                   head_dim=head_dim)
