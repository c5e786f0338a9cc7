"""The start-up checks of engines with vision: architecture, template, and the encoder's token counts."""

from __future__ import annotations

import json

import pytest

from inference_worker.engines import exllamav3_vision, vision_prompts
from inference_worker.engines.vision_checks import check_feature_counts, require_model_type
from shared.image_tokens import FixedImageTokens, PatchGridImageTokens


@pytest.mark.parametrize("engine, supported, refused", [
    ("transformers", vision_prompts.MODEL_TYPES, "qwen2_5_vl"),
    ("exllamav3", exllamav3_vision.MODEL_TYPES, "llava"),
])
def test_each_engine_serves_images_only_for_the_architectures_it_knows(tmp_path, engine, supported, refused):
    config = tmp_path / "config.json"
    for model_type in supported:
        config.write_text(json.dumps({"model_type": model_type}))
        assert require_model_type(tmp_path, supported, engine) == model_type
    config.write_text(json.dumps({"model_type": refused}))
    with pytest.raises(RuntimeError, match=f"the {engine} engine serves images for model types .*'{refused}'"):
        require_model_type(tmp_path, supported, engine)


@pytest.mark.parametrize("rule", [FixedImageTokens("<image>", 16), PatchGridImageTokens(14, 2, 3136, 12845056)])
def test_an_encoder_that_disagrees_with_the_rule_is_refused_at_start(rule):
    check_feature_counts(rule, lambda image: rule.feature_tokens(image.width, image.height))
    with pytest.raises(RuntimeError, match="not supported"):
        check_feature_counts(rule, lambda image: rule.feature_tokens(image.width, image.height) + 1)
