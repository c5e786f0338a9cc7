"""Embedding models in the registry: their dimensions and input limit, checked at load time."""

from __future__ import annotations

import pytest

from shared.registry import EmbeddingSpec, ModelRegistry, RegistryError

EMBEDDER = """
[[models]]
id = "embedder"
engine = "sentence-transformers"
context_length = 512
capabilities = ["embeddings"]
weights = { path = "/models/embedder" }
pricing = { input = "0.01", output = "0.01" }
"""


def load(tmp_path, extra: str) -> ModelRegistry:
    path = tmp_path / "models.toml"
    path.write_text(EMBEDDER + extra)
    return ModelRegistry.load(path)


def test_an_embedding_model_declares_dimensions_and_input_limit(tmp_path):
    spec = load(tmp_path, "dimensions = 768\nmax_input_tokens = 512\nshortenable_dimensions = true\n").get("embedder")
    assert spec.embedding == EmbeddingSpec(dimensions=768, max_input_tokens=512, shortenable=True)
    assert spec.supports("embeddings") and not spec.supports("chat")


def test_shortening_is_off_unless_declared(tmp_path):
    spec = load(tmp_path, "dimensions = 384\nmax_input_tokens = 256\n").get("embedder")
    assert spec.embedding.shortenable is False


@pytest.mark.parametrize("extra, words", [
    ("max_input_tokens = 256\n", "dimensions"),
    ("dimensions = 384\n", "max_input_tokens"),
    ("dimensions = 0\nmax_input_tokens = 256\n", "positive"),
    ("dimensions = 384\nmax_input_tokens = 1024\n", "within context_length"),
    ("dimensions = 384\nmax_input_tokens = 256\nshortenable_dimensions = \"yes\"\n", "bool"),
])
def test_incomplete_embedding_models_are_refused(tmp_path, extra, words):
    with pytest.raises(RegistryError, match=words):
        load(tmp_path, extra)


def test_the_default_embedding_model(registry):
    spec = registry.get("all-minilm-l6-v2")
    assert spec.engine == "sentence-transformers"
    assert spec.embedding == EmbeddingSpec(dimensions=384, max_input_tokens=256, shortenable=False)
    assert spec.pricing.input_per_million > 0
    assert (spec.weights.resolve() / "modules.json").exists()  # shipped inside the package


def test_chat_models_have_no_embedding_spec(registry, default_spec):
    assert default_spec.embedding is None
