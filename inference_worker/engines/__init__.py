"""Inference engines, one module each, behind the interface in `base`."""

from __future__ import annotations

from shared.chat_tokenizer import ChatTokenizer
from shared.registry import ModelSpec
from shared.settings import Settings

from inference_worker.engines.base import Engine


def create_engine(spec: ModelSpec, settings: Settings, tokenizer: ChatTokenizer) -> Engine:
    """The engine the registry names for `spec`; heavy libraries are imported only when chosen."""
    if spec.engine == "llamacpp":
        from inference_worker.engines.llamacpp import LlamaCppEngine
        return LlamaCppEngine(spec, settings, tokenizer)
    if spec.engine == "transformers":
        from inference_worker.engines.transformers_cpu import TransformersEngine
        return TransformersEngine(spec, settings, tokenizer)
    if spec.engine == "exllamav3":
        from inference_worker.engines.exllamav3 import ExLlamaV3Engine
        return ExLlamaV3Engine(spec, settings, tokenizer)
    if spec.engine == "exllamav2":
        from inference_worker.engines.exllamav2 import ExLlamaV2Engine
        return ExLlamaV2Engine(spec, settings, tokenizer)
    if spec.engine == "benchmark":
        from inference_worker.engines.benchmark import BenchmarkEngine
        return BenchmarkEngine(spec, settings, tokenizer)
    raise ValueError(f"model {spec.id!r} needs engine {spec.engine!r}, which this build does not include")
