"""Fixtures shared by the unit tests: no services, no network; the default model's real tokenizer."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.chat_tokenizer import ChatTokenizer
from shared.registry import ModelRegistry, ModelSpec
from shared.settings import DEFAULT_MODELS_FILE, Settings
from shared.tokenizer_cache import prepare_tokenizer


@pytest.fixture
def settings() -> Settings:
    """The documented defaults, whatever the environment of the test run holds."""
    return Settings.from_env({})


@pytest.fixture(scope="session")
def registry() -> ModelRegistry:
    return ModelRegistry.load(DEFAULT_MODELS_FILE)


@pytest.fixture(scope="session")
def default_spec(registry: ModelRegistry) -> ModelSpec:
    """The model a worker serves when LLAMAGATE_WORKER_MODELS is not set."""
    spec = registry.get(Settings.from_env({}).worker_models[0])
    assert spec is not None
    return spec


@pytest.fixture(scope="session")
def benchmark_spec(registry: ModelRegistry) -> ModelSpec:
    spec = next((s for s in registry if s.engine == "benchmark"), None)
    assert spec is not None, "the default registry lists a benchmark model"
    return spec


@pytest.fixture(scope="session")
def tokenizer_dir(default_spec: ModelSpec) -> Path:
    # The converted tokenizer lives in the same cache `llamagate release` fills: converting a
    # GGUF tokenizer takes about ten seconds, reusing the cache takes none.
    return prepare_tokenizer(default_spec.tokenizer, Settings.from_env({}).cache_dir)


@pytest.fixture(scope="session")
def chat_tokenizer(tokenizer_dir: Path) -> ChatTokenizer:
    return ChatTokenizer.from_directory(tokenizer_dir)
