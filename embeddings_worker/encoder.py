"""The model side of the embeddings worker: token ids in, one vector per input out.

Inputs arrive already tokenized (the API counted them), so the encoder pads them into one
tensor and runs the model's whole sentence-transformers pipeline (transformer, pooling and,
where the model has it, normalization) exactly as `SentenceTransformer.encode` would.
"""

from __future__ import annotations

import logging
import os
from typing import Protocol, Sequence

import numpy as np

from shared.registry import ModelSpec
from shared.settings import Settings

log = logging.getLogger(__name__)


class Encoder(Protocol):
    spec: ModelSpec
    dimensions: int
    vocab_size: int
    normalizes: bool  # whether its vectors come out with unit length

    def load(self) -> None: ...

    def encode(self, inputs: Sequence[Sequence[int]]) -> np.ndarray:
        """A float32 array with one row per input, in the order given."""
        ...


class SentenceTransformerEncoder:
    def __init__(self, spec: ModelSpec, settings: Settings):
        self.spec = spec
        self.settings = settings
        self.dimensions = spec.embedding.dimensions if spec.embedding else 0
        self.vocab_size = 0
        self.normalizes = False
        self._model = None
        self._pad_id = 0

    def load(self) -> None:
        # Weights ship inside a Python package; never reach for the hub.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import torch
        from sentence_transformers import SentenceTransformer

        torch.set_num_threads(self.settings.embeddings_torch_threads or os.cpu_count() or 1)
        path = self.spec.weights.resolve()
        model = SentenceTransformer(str(path), device="cpu", local_files_only=True)
        model.eval()
        produced = model.get_embedding_dimension()
        if produced != self.dimensions:
            raise ValueError(f"model {self.spec.id!r} makes {produced}-dimensional vectors, "
                             f"but the registry says {self.dimensions}")
        tokenizer = model.tokenizer
        self._pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.vocab_size = len(tokenizer)
        # By name: the module's import path moves between sentence-transformers releases.
        self.normalizes = any(type(module).__name__ == "Normalize" for module in model)
        self._model = model
        log.info("embedding model loaded", extra={"model": self.spec.id, "path": str(path),
                                                  "dimensions": produced, "normalizes": self.normalizes})

    def encode(self, inputs: Sequence[Sequence[int]]) -> np.ndarray:
        import torch

        width = max(len(ids) for ids in inputs)
        input_ids = torch.full((len(inputs), width), self._pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(inputs), width), dtype=torch.long)
        for row, ids in enumerate(inputs):
            input_ids[row, :len(ids)] = torch.tensor(ids, dtype=torch.long)
            attention_mask[row, :len(ids)] = 1
        features = {"input_ids": input_ids, "attention_mask": attention_mask,
                    "token_type_ids": torch.zeros_like(input_ids)}
        with torch.inference_mode():
            vectors = self._model(features)["sentence_embedding"]
        return vectors.float().numpy()


def create_encoder(spec: ModelSpec, settings: Settings) -> Encoder:
    if spec.engine == "sentence-transformers":
        return SentenceTransformerEncoder(spec, settings)
    raise SystemExit(f"model {spec.id!r} uses engine {spec.engine!r}, which the embeddings worker cannot run")


def shorten(vectors: np.ndarray, dimensions: int, normalize: bool) -> np.ndarray:
    """Keep the first `dimensions` of each vector (for Matryoshka-trained models), at unit length again
    if the model's vectors have unit length."""
    cut = vectors[:, :dimensions]
    if normalize:
        norms = np.linalg.norm(cut, axis=1, keepdims=True)
        cut = cut / np.maximum(norms, 1e-12)
    return np.ascontiguousarray(cut, dtype=np.float32)
