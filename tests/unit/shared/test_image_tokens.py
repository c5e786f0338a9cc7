"""Image-token rules: the API's count of an image's tokens, read from a model's processor files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from PIL import Image

from shared.image_tokens import FixedImageTokens, PatchGridImageTokens, UnsupportedVisionModel, image_token_rule


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
    (lambda f: f["config"].update(model_type="llava_next"), "no image-token rule for model type 'llava_next'"),
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


# --- Gemma 3 and Qwen2.5-VL (served by the exllamav3 engine) ------------------------------------

GEMMA3 = dict(  # google/gemma-3-4b-it
    config={"model_type": "gemma3", "mm_tokens_per_image": 256, "boi_token_index": 255999,
            "eoi_token_index": 256000, "image_token_index": 262144,
            "vision_config": {"model_type": "siglip_vision_model", "image_size": 896, "patch_size": 14}},
    processor_config={"image_seq_length": 256, "processor_class": "Gemma3Processor"},
    preprocessor_config={"do_pan_and_scan": None, "image_processor_type": "Gemma3ImageProcessor",
                         "size": {"height": 896, "width": 896}, "resample": 2, "rescale_factor": 1 / 255},
)
QWEN25_VL = dict(  # Qwen/Qwen2.5-VL-7B-Instruct
    config={"model_type": "qwen2_5_vl", "vision_config": {"spatial_merge_size": 2, "patch_size": 14,
                                                          "temporal_patch_size": 2, "window_size": 112}},
    preprocessor_config={"min_pixels": 3136, "max_pixels": 12845056, "patch_size": 14, "temporal_patch_size": 2,
                         "merge_size": 2, "image_processor_type": "Qwen2_5_VLImageProcessor",
                         "processor_class": "Qwen2_5_VLProcessor"},
)


def test_gemma3_writes_its_fixed_run_of_soft_tokens_between_the_image_markers(tmp_path):
    rule = image_token_rule(checkpoint(tmp_path, **GEMMA3))
    assert rule.placeholder == "<start_of_image>" and rule.image_token == "<image_soft_token>"
    assert rule.image_text(4000, 30) == rule.image_text(64, 64) == \
        "\n\n<start_of_image>" + "<image_soft_token>" * 256 + "<end_of_image>\n\n"
    assert rule.feature_tokens(640, 480) == 256


def test_gemma3s_rule_writes_what_its_processor_writes():
    """Gemma3Processor with a toy tokenizer holding Gemma's image tokens: same ids as the rule's text."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast
    from transformers.models.gemma3.image_processing_pil_gemma3 import Gemma3ImageProcessorPil
    from transformers.models.gemma3.processing_gemma3 import Gemma3Processor

    special = ["<pad>", "<eos>", "<bos>", "<start_of_image>", "<end_of_image>", "<image_soft_token>"]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(["Look at this picture, then this one.\n\n"] * 10, trainers.BpeTrainer(
        vocab_size=300, special_tokens=special, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
                                        extra_special_tokens={"boi_token": "<start_of_image>", "image_token":
                                                              "<image_soft_token>", "eoi_token": "<end_of_image>"})
    processor = Gemma3Processor(image_processor=Gemma3ImageProcessorPil(size={"height": 56, "width": 56}),
                                tokenizer=tokenizer, image_seq_length=16)
    rule = FixedImageTokens.for_gemma3({"mm_tokens_per_image": 16}, {"image_seq_length": 16}, {})
    text = "Look at <start_of_image> this picture, then <start_of_image> this one."
    images = [Image.new("RGB", (300, 200)), Image.new("RGB", (20, 90))]
    built = processor(text=[text], images=[images], add_special_tokens=False)["input_ids"][0]
    expanded = rule.expand(text, [(*image.size, "auto") for image in images])
    assert list(built) == tokenizer(expanded, add_special_tokens=False)["input_ids"]


@pytest.mark.parametrize("change, message", [
    (lambda f: f["preprocessor_config"].update(do_pan_and_scan=True), "pan-and-scan"),
    (lambda f: f["processor_config"].update(image_seq_length=64), "writes 64 tokens per image where the model has 256"),
    (lambda f: f["config"].pop("mm_tokens_per_image"), "mm_tokens_per_image"),
])
def test_gemma3_checkpoints_it_cannot_count_are_refused(tmp_path, change, message):
    files = json.loads(json.dumps(GEMMA3))
    change(files)
    with pytest.raises(UnsupportedVisionModel, match=message):
        image_token_rule(checkpoint(tmp_path, **files))


@pytest.mark.parametrize("engine, files, refused", [
    ("transformers", LLAVA_15, GEMMA3), ("exllamav3", GEMMA3, LLAVA_15), ("exllamav3", QWEN25_VL, LLAVA_15),
    ("llamacpp", None, LLAVA_15),
])
def test_a_rule_is_given_only_for_an_architecture_its_engine_serves_images_for(tmp_path, engine, files, refused):
    if files is not None:
        assert image_token_rule(checkpoint(tmp_path / "served", **files), engine).feature_tokens(640, 480) > 0
    model_type = refused["config"]["model_type"]
    with pytest.raises(UnsupportedVisionModel, match=f"the {engine} engine serves images for model types "
                                                     f".*; this model is '{model_type}'"):
        image_token_rule(checkpoint(tmp_path / "refused", **refused), engine)


SIZES = [(640, 480), (97, 311), (28, 28), (30, 29), (1920, 1080), (5000, 30), (4032, 3024), (333, 57)]


@pytest.mark.parametrize("max_pixels", [12845056, 28 * 28 * 64])  # the shipped budget, and one that shrinks images
def test_qwen25_vl_counts_one_token_per_grid_cell_as_its_image_processor_does(tmp_path, max_pixels):
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    files = json.loads(json.dumps(QWEN25_VL))
    files["preprocessor_config"]["max_pixels"] = max_pixels
    rule = image_token_rule(checkpoint(tmp_path, **files))
    assert isinstance(rule, PatchGridImageTokens) and rule.placeholder == rule.image_token == "<|image_pad|>"
    processor = Qwen2VLImageProcessorPil(min_pixels=3136, max_pixels=max_pixels, patch_size=14, merge_size=2)
    for width, height in SIZES:
        grid = processor(images=[Image.new("RGB", (width, height))], return_tensors="pt")["image_grid_thw"][0]
        assert rule.feature_tokens(width, height) == int(grid.prod()) // 4, (width, height)
        assert rule.image_text(width, height) == "<|image_pad|>" * rule.feature_tokens(width, height)


def test_qwen25_vl_reads_the_pixel_budget_from_size_when_min_and_max_pixels_are_absent(tmp_path):
    files = json.loads(json.dumps(QWEN25_VL))
    budget = files["preprocessor_config"]
    budget["size"] = {"shortest_edge": budget.pop("min_pixels"), "longest_edge": 28 * 28 * 100}
    del budget["max_pixels"]
    rule = image_token_rule(checkpoint(tmp_path, **files))
    assert rule.feature_tokens(4000, 4000) == 100
    assert rule.describe() == "one token per 28x28 pixels, 4 to 100 tokens per image"


@pytest.mark.parametrize("width, height, message", [(27, 500, "at least 28x28"), (28, 5700, "aspect ratio")])
def test_qwen25_vl_refuses_images_its_encoder_cannot_take(width, height, message):
    with pytest.raises(ValueError, match=message):
        PatchGridImageTokens(14, 2, 3136, 12845056).image_text(width, height)


def test_qwen25_vls_rule_read_from_a_checkpoint_gives_the_model_one_token_per_feature(tiny_qwen_vl_dir):
    """On a whole Qwen2.5-VL checkpoint (tiny, random weights): the ids the rule counts are the ids
    the model takes with its image processor's pixels. transformers refuses a prompt whose image
    tokens and image features differ, so a miscount fails here."""
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    from shared.chat_tokenizer import ChatTokenizer

    tokenizer = ChatTokenizer.from_directory(tiny_qwen_vl_dir)
    rule = image_token_rule(tiny_qwen_vl_dir)
    settings = json.loads((tiny_qwen_vl_dir / "preprocessor_config.json").read_text())
    processor = Qwen2VLImageProcessorPil(min_pixels=settings["min_pixels"], max_pixels=settings["max_pixels"],
                                         patch_size=14, merge_size=2)
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(str(tiny_qwen_vl_dir), dtype=torch.float32).eval()
    text = tokenizer.render([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "And?"},
                                                          {"type": "image"}]}], content_parts=True)
    for sizes in [((640, 480), (97, 311)), ((4032, 3024), (28, 28))]:  # the second pair: over and at the budget's ends
        images = [Image.new("RGB", size, (200, 30, 30)) for size in sizes]
        ids = tokenizer.encode(rule.expand(text, [(*size, "auto") for size in sizes]))
        pixels = processor(images=images, return_tensors="pt")
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids]), pixel_values=pixels["pixel_values"],
                           image_grid_thw=pixels["image_grid_thw"]).logits
        assert logits.shape[1] == len(ids)
        with pytest.raises(ValueError):  # one image token too many is refused: the check above can fail
            model(input_ids=torch.tensor([ids[:3] + [ids[ids.index(tokenizer.token_id("<|image_pad|>"))]] + ids[3:]]),
                  pixel_values=pixels["pixel_values"], image_grid_thw=pixels["image_grid_thw"])


def test_there_is_a_rule_for_every_architecture_an_engine_serves_images_for_and_no_other():
    from shared.image_tokens import RULES
    from shared.registry import VISION_MODEL_TYPES

    assert set(RULES) == set().union(*VISION_MODEL_TYPES.values())
