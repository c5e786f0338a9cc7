"""Image-token rules: the API's count of an image's tokens, read from a model's processor files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shared.image_tokens import FixedImageTokens, UnsupportedVisionModel, image_token_rule


def checkpoint(directory: Path, **files: dict) -> Path:
    """A model directory holding just the given JSON files (config.json, processor_config.json, ...)."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (directory / f"{name}.json").write_text(json.dumps(content))
    return directory


# The processor files of real LLaVA checkpoints, as they ship (the fields that matter here).
LLAVA_15 = dict(  # llava-hf/llava-1.5-7b-hf: CLIP ViT-L/14 at 336 px, with CLS
    config={"model_type": "llava", "vision_feature_select_strategy": "default",
            "vision_config": {"model_type": "clip_vision_model", "image_size": 336, "patch_size": 14}},
    processor_config={"image_token": "<image>", "num_additional_image_tokens": 1, "patch_size": 14,
                      "processor_class": "LlavaProcessor", "vision_feature_select_strategy": "default"},
    preprocessor_config={"crop_size": {"height": 336, "width": 336}, "do_center_crop": True,
                         "size": {"shortest_edge": 336}, "image_processor_type": "CLIPImageProcessor"},
)
LLAVA_INTERLEAVE_QWEN = dict(  # llava-hf/llava-interleave-qwen-0.5b-hf: SigLIP at 384 px, no CLS
    config={"model_type": "llava", "vision_feature_select_strategy": "full",
            "vision_config": {"model_type": "siglip_vision_model", "image_size": 384, "patch_size": 14}},
    processor_config={"image_token": "<image>", "num_additional_image_tokens": 0, "patch_size": 14,
                      "processor_class": "LlavaProcessor", "vision_feature_select_strategy": "full"},
    preprocessor_config={"do_resize": True, "size": {"height": 384, "width": 384},
                         "image_processor_type": "SiglipImageProcessor"},
)


@pytest.mark.parametrize("files, tokens", [(LLAVA_15, 576), (LLAVA_INTERLEAVE_QWEN, 729)])
def test_real_llava_checkpoints_get_their_processors_count(tmp_path, files, tokens):
    rule = image_token_rule(checkpoint(tmp_path, **files))
    assert isinstance(rule, FixedImageTokens)
    assert rule.placeholder == "<image>"
    assert rule.tokens_per_image == tokens
    assert rule.image_text(4000, 3000, "high") == rule.image_text(10, 10, "low") == "<image>" * tokens


def test_settings_nested_in_processor_config_are_read(tmp_path):
    # transformers 5 saves the image processor's settings inside processor_config.json.
    processor = dict(LLAVA_15["processor_config"], image_processor=LLAVA_15["preprocessor_config"])
    rule = image_token_rule(checkpoint(tmp_path, config=LLAVA_15["config"], processor_config=processor))
    assert rule.tokens_per_image == 576


def test_the_tiny_test_model_takes_one_token_per_patch(tiny_vlm_dir):
    from tiny_vlm import TOKENS_PER_IMAGE

    assert image_token_rule(tiny_vlm_dir).tokens_per_image == TOKENS_PER_IMAGE == 16


def test_expand_replaces_each_placeholder_in_order():
    rule = FixedImageTokens("<image>", 2)
    text = "<s>user\n<image>\nCompare <image> with that.</s>"
    assert rule.expand(text, [(1, 1, "auto"), (5, 5, "low")]) == \
        "<s>user\n<image><image>\nCompare <image><image> with that.</s>"


@pytest.mark.parametrize("images", [0, 1, 3])
def test_expand_refuses_a_prompt_that_places_another_number_of_images(images):
    with pytest.raises(ValueError, match="placed 2 image"):
        FixedImageTokens("<image>", 2).expand("<image><image>", [(1, 1, "auto")] * images)


@pytest.mark.parametrize("change, message", [
    (lambda f: f["config"].update(model_type="qwen2_vl"), "no image-token rule for model type 'qwen2_vl'"),
    (lambda f: f.pop("config"), "no config.json"),
    (lambda f: f["preprocessor_config"].update(do_center_crop=False), "fixed size"),
    (lambda f: (f["processor_config"].pop("patch_size"), f["config"]["vision_config"].pop("patch_size")),
     "patch_size"),
])
def test_unsupported_checkpoints_are_refused_by_name(tmp_path, change, message):
    files = json.loads(json.dumps(LLAVA_15))
    change(files)
    with pytest.raises(UnsupportedVisionModel, match=message):
        image_token_rule(checkpoint(tmp_path, **files))
