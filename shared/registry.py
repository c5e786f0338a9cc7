"""The model registry: which models exist, what they can do, where their weights are, what they cost."""

from __future__ import annotations

import importlib.util
import tomllib
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Iterator

CAPABILITIES = frozenset({"chat", "tools", "json", "vision", "embeddings", "reasoning"})
ENGINES = frozenset({"llamacpp", "transformers", "benchmark", "exllamav3", "exllamav2", "sentence-transformers"})
# The architectures (config.json's model_type) each engine puts images into a prompt for; other
# engines take no images. The engine classes that set `accepts_images` are these (a test checks),
# and `llamagate release`, the API and a worker at start refuse a vision model of another type.
VISION_MODEL_TYPES = {"transformers": frozenset({"llava"}), "exllamav3": frozenset({"gemma3", "qwen2_5_vl"})}
VISION_ENGINES = frozenset(VISION_MODEL_TYPES)
MICRO_DOLLARS_PER_DOLLAR = 1_000_000


class RegistryError(ValueError):
    """The registry file is malformed; raised at load time, never per request."""


@dataclass(frozen=True)
class WeightsSource:
    """Where a model's files are: a file inside an installed package, or a local path."""

    format: str  # "gguf" or "hf"
    package: str | None = None
    file: str | None = None
    path: str | None = None

    def resolve(self) -> Path:
        """The local path of the weights (a .gguf file, or an HF-format directory)."""
        if self.path:
            return Path(self.path).expanduser()
        spec = importlib.util.find_spec(self.package)
        if spec is None or not spec.submodule_search_locations:
            raise FileNotFoundError(
                f"Python package {self.package!r} holding model weights is not installed")
        return Path(next(iter(spec.submodule_search_locations))) / self.file

    @property
    def cache_key(self) -> str:
        """A stable name for caches derived from these weights (such as a converted tokenizer)."""
        return self.path or f"{self.package}/{self.file}"


@dataclass(frozen=True)
class Pricing:
    """Prices in integer micro-dollars per million tokens: money is never a float."""

    input_per_million: int
    output_per_million: int

    def cost_micros(self, prompt_tokens: int, completion_tokens: int) -> int:
        """Cost of a request in micro-dollars, rounded up so no usage is ever free by rounding."""
        total = prompt_tokens * self.input_per_million + completion_tokens * self.output_per_million
        return -(-total // 1_000_000)


@dataclass(frozen=True)
class EmbeddingSpec:
    """What an embedding model produces and accepts."""

    dimensions: int  # length of its vectors
    max_input_tokens: int  # per input, special tokens included
    shortenable: bool = False  # whether vectors may be cut to fewer `dimensions` (Matryoshka-trained)


@dataclass(frozen=True)
class ModelSpec:
    id: str
    engine: str
    owned_by: str
    created: int
    context_length: int
    capabilities: frozenset[str]
    weights: WeightsSource
    tokenizer: WeightsSource
    pricing: Pricing
    embedding: EmbeddingSpec | None = None  # set for models with the "embeddings" capability

    def supports(self, capability: str) -> bool:
        return capability in self.capabilities


class ModelRegistry:
    """All models known to this deployment, by id."""

    def __init__(self, models: list[ModelSpec]):
        self._models: dict[str, ModelSpec] = {}
        for model in models:
            if model.id in self._models:
                raise RegistryError(f"model {model.id!r} is listed twice")
            self._models[model.id] = model

    @classmethod
    def load(cls, path: Path) -> "ModelRegistry":
        try:
            document = tomllib.loads(Path(path).read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise RegistryError(f"cannot read model registry {path}: {exc}") from exc
        entries = document.get("models")
        if not isinstance(entries, list) or not entries:
            raise RegistryError(f"{path}: expected one or more [[models]] tables")
        return cls([_parse_model(entry, path) for entry in entries])

    def get(self, model_id: str) -> ModelSpec | None:
        return self._models.get(model_id)

    def __iter__(self) -> Iterator[ModelSpec]:
        return iter(self._models.values())

    def __contains__(self, model_id: object) -> bool:
        return model_id in self._models


def _parse_model(entry: dict[str, Any], path: Path) -> ModelSpec:
    where = f"{path}: model {entry.get('id', '?')!r}"
    try:
        model_id = _require(entry, "id", str, where)
        engine = _require(entry, "engine", str, where)
        if engine not in ENGINES:
            raise RegistryError(f"{where}: unknown engine {engine!r} (known: {sorted(ENGINES)})")
        capabilities = frozenset(_require(entry, "capabilities", list, where))
        unknown = capabilities - CAPABILITIES
        if unknown:
            raise RegistryError(f"{where}: unknown capabilities {sorted(unknown)}")
        context_length = _require(entry, "context_length", int, where)
        if context_length <= 0:
            raise RegistryError(f"{where}: context_length must be positive")
        weights = _parse_source(_require(entry, "weights", dict, where), where)
        tokenizer = _parse_source(_require(entry, "tokenizer", dict, where), where) if "tokenizer" in entry \
            else weights
        pricing = _parse_pricing(_require(entry, "pricing", dict, where), where)
        created = _require(entry, "created", int, where) if "created" in entry else 0
        embedding = _parse_embedding(entry, context_length, where) if "embeddings" in capabilities else None
        if "vision" in capabilities and (engine not in VISION_ENGINES or weights.format != "hf"):
            raise RegistryError(f"{where}: the vision capability needs an engine among {sorted(VISION_ENGINES)} "
                                "and weights in Hugging Face format (a directory with the model's processor files)")
        return ModelSpec(id=model_id, engine=engine, owned_by=str(entry.get("owned_by", "llamagate")),
                         created=created, context_length=context_length,
                         capabilities=capabilities, weights=weights, tokenizer=tokenizer,
                         pricing=pricing, embedding=embedding)
    except (KeyError, TypeError) as exc:
        raise RegistryError(f"{where}: {exc}") from exc


def _parse_embedding(entry: dict[str, Any], context_length: int, where: str) -> EmbeddingSpec:
    dimensions = _require(entry, "dimensions", int, where)
    max_input_tokens = _require(entry, "max_input_tokens", int, where)
    if dimensions <= 0 or not 0 < max_input_tokens <= context_length:
        raise RegistryError(f"{where}: dimensions must be positive and max_input_tokens within context_length")
    shortenable = entry.get("shortenable_dimensions", False)
    if not isinstance(shortenable, bool):
        raise RegistryError(f"{where}: field 'shortenable_dimensions' must be a bool")
    return EmbeddingSpec(dimensions=dimensions, max_input_tokens=max_input_tokens, shortenable=shortenable)


def _require(entry: dict[str, Any], key: str, kind: type, where: str) -> Any:
    if key not in entry:
        raise RegistryError(f"{where}: missing field {key!r}")
    value = entry[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise RegistryError(f"{where}: field {key!r} must be a {kind.__name__}")
    return value


def _parse_source(table: dict[str, Any], where: str) -> WeightsSource:
    source = WeightsSource(format=str(table.get("format", "hf")), package=table.get("package"),
                           file=table.get("file"), path=table.get("path"))
    if source.format not in ("gguf", "hf"):
        raise RegistryError(f"{where}: weights format must be 'gguf' or 'hf'")
    if not source.path and not (source.package and source.file):
        raise RegistryError(f"{where}: weights need either 'path' or both 'package' and 'file'")
    return source


def _parse_pricing(table: dict[str, Any], where: str) -> Pricing:
    def micros(key: str) -> int:
        try:
            dollars = Decimal(str(table[key]))
        except (KeyError, InvalidOperation):
            raise RegistryError(f"{where}: pricing.{key} must be a decimal string") from None
        if not dollars.is_finite():
            raise RegistryError(f"{where}: pricing.{key} must be a finite amount")
        if dollars <= 0:
            # A zero price silently turns billing off for a model; refuse it at load time.
            raise RegistryError(f"{where}: pricing.{key} must be positive")
        value = dollars * MICRO_DOLLARS_PER_DOLLAR
        if value != value.to_integral_value():
            raise RegistryError(f"{where}: pricing.{key} is finer than a micro-dollar per million")
        return int(value)

    return Pricing(input_per_million=micros("input"), output_per_million=micros("output"))
