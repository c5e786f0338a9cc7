"""The GPU engines' CPU-side parts: KV cache sizing, and a clear refusal where no GPU is."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from inference_worker.engines import create_engine
from inference_worker.engines.gpu import GpuUnavailableError, KvShape, cache_tokens, kv_shape_of
from shared.registry import WeightsSource
from shared.settings import Settings

GIB = 1 << 30
LLAMA_8B_KV = KvShape(layers=32, kv_heads=8, head_dim=128)  # 128 KiB per token in FP16


def test_kv_bytes_per_token():
    assert LLAMA_8B_KV.bytes_per_token == 128 * 1024


def test_cache_takes_the_fraction_of_free_memory_beside_the_reserve_in_whole_pages():
    tokens = cache_tokens(free_bytes=43 * GIB, kv=LLAMA_8B_KV, page_size=256, fraction=0.5, context_length=8192)
    assert tokens == (20 * GIB // (128 * 1024)) // 256 * 256  # (43 - 3 GiB reserve) * 0.5


def test_a_configured_cache_size_wins_and_is_rounded_to_pages():
    assert cache_tokens(GIB, LLAMA_8B_KV, 256, 0.9, 1000, configured=10_000) == 9984


def test_a_cache_smaller_than_one_full_context_request_refuses_to_start():
    with pytest.raises(GpuUnavailableError, match="fewer than one request of the model's full context"):
        cache_tokens(free_bytes=4 * GIB, kv=LLAMA_8B_KV, page_size=256, fraction=0.9, context_length=131072)


def test_kv_shape_comes_from_the_model_config(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"num_attention_heads": 9, "hidden_size": 576,
                                                      "num_key_value_heads": 3, "num_hidden_layers": 30}))
    assert kv_shape_of(tmp_path) == KvShape(layers=30, kv_heads=3, head_dim=64)


@pytest.mark.parametrize("engine", ["exllamav3", "exllamav2"])
def test_selecting_a_gpu_engine_without_a_gpu_fails_at_load_with_what_to_do(default_spec, chat_tokenizer,
                                                                             tmp_path, engine):
    spec = replace(default_spec, engine=engine, weights=WeightsSource(format="hf", path=str(tmp_path)))
    worker_engine = create_engine(spec, Settings.from_env({}), chat_tokenizer)
    with pytest.raises(GpuUnavailableError) as failure:
        worker_engine.load()
    message = str(failure.value)
    assert engine in message and ("llamagate[gpu]" in message or "NVIDIA GPU" in message)


def test_gpu_settings_parse_from_the_environment():
    settings = Settings.from_env({"LLAMAGATE_EXLLAMAV2_ALLOW_UNBATCHED": "yes", "LLAMAGATE_GPU_CACHE_TOKENS": "65536",
                                  "LLAMAGATE_GPU_MEMORY_FRACTION": "0.8"})
    assert settings.exllamav2_allow_unbatched is True
    assert settings.gpu_cache_tokens == 65536 and settings.gpu_memory_fraction == 0.8
    assert Settings.from_env({}).exllamav2_allow_unbatched is False
    with pytest.raises(ValueError, match="LLAMAGATE_EXLLAMAV2_ALLOW_UNBATCHED"):
        Settings.from_env({"LLAMAGATE_EXLLAMAV2_ALLOW_UNBATCHED": "maybe"})
    with pytest.raises(ValueError, match="GPU_MEMORY_FRACTION"):
        Settings.from_env({"LLAMAGATE_GPU_MEMORY_FRACTION": "1.5"})


def test_the_registry_admits_vision_models_on_exactly_the_engines_that_take_images():
    from inference_worker.engines.benchmark import BenchmarkEngine
    from inference_worker.engines.exllamav2 import ExLlamaV2Engine
    from inference_worker.engines.exllamav3 import ExLlamaV3Engine
    from inference_worker.engines.llamacpp import LlamaCppEngine
    from inference_worker.engines.transformers_cpu import TransformersEngine
    from shared.registry import VISION_ENGINES

    classes = (BenchmarkEngine, ExLlamaV2Engine, ExLlamaV3Engine, LlamaCppEngine, TransformersEngine)
    assert {cls.name for cls in classes if cls.accepts_images} == VISION_ENGINES
