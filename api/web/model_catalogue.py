"""The registry as the pricing page shows it: one row per model, with its category and badges."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

from shared.registry import ModelRegistry, ModelSpec

# Capabilities worth a badge, in the order they are shown.
BADGES = (("tools", "Tools"), ("vision", "Vision"), ("json", "JSON"), ("reasoning", "Reasoning"),
          ("embeddings", "Embeddings"))


@dataclass(frozen=True)
class ModelRow:
    id: str
    owned_by: str
    category: str
    context_length: int
    input_per_million_micros: int
    output_per_million_micros: int
    badges: tuple[str, ...]
    serving: bool  # a live worker has it loaded right now
    image_tokens: Optional[str] = None  # vision models: what an image costs in prompt tokens


def category(spec: ModelSpec) -> str:
    if spec.supports("embeddings"):
        return "Embeddings"
    if spec.supports("reasoning"):
        return "Reasoning"
    if spec.supports("vision"):
        return "Vision chat"
    return "Chat"


def model_rows(registry: ModelRegistry, serving: set[str],
               image_tokens: Callable[[ModelSpec], Optional[str]] = lambda spec: None) -> list[ModelRow]:
    """Every model in the registry, those being served first, then by id."""
    rows = [ModelRow(id=spec.id, owned_by=spec.owned_by, category=category(spec),
                     context_length=spec.context_length,
                     input_per_million_micros=spec.pricing.input_per_million,
                     output_per_million_micros=spec.pricing.output_per_million,
                     badges=tuple(label for capability, label in BADGES if spec.supports(capability)),
                     serving=spec.id in serving,
                     image_tokens=image_tokens(spec) if spec.supports("vision") else None)
            for spec in registry]
    return sorted(rows, key=lambda row: (not row.serving, row.id))
