"""`llamagate release`: the deploy step fails on a vision model its engine cannot serve images for."""

from __future__ import annotations

import pytest

from shared.cli import release
from shared.image_tokens import UnsupportedVisionModel
from tiny_vlm import registry_entry


@pytest.fixture()
def release_env(monkeypatch, tmp_path):
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'release.db'}")
    monkeypatch.setenv("LLAMAGATE_CACHE_DIR", str(tmp_path / "cache"))
    models_file = tmp_path / "models.toml"
    monkeypatch.setenv("LLAMAGATE_MODELS_FILE", str(models_file))
    return models_file


def test_a_vision_model_on_an_engine_that_serves_its_architecture_is_released_with_its_image_cost(
        release_env, tiny_qwen_vl_dir, capsys):
    release_env.write_text(registry_entry("tiny-qwen", tiny_qwen_vl_dir).replace('"transformers"', '"exllamav3"'))
    release()
    printed = capsys.readouterr().out
    assert "tiny-qwen: engine=exllamav3" in printed
    assert "images='one token per 28x28 pixels, 4 to 256 tokens per image'" in printed


def test_a_vision_model_on_an_engine_that_does_not_serve_its_architecture_fails_the_release(
        release_env, tiny_qwen_vl_dir):
    release_env.write_text(registry_entry("tiny-qwen", tiny_qwen_vl_dir))  # the transformers engine: LLaVA only
    with pytest.raises(UnsupportedVisionModel, match="the transformers engine serves images for model types llava"):
        release()
