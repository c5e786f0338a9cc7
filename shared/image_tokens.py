"""How many prompt tokens an image takes, for a vision model, computed without its processor.

A vision model's chat template writes a placeholder (LLaVA: `<image>`) where each image goes, and
the model's processor replaces it with the image's text: a run of image tokens, one per feature the
vision tower produces, sometimes between markers. The API must know that count before it queues a
job (context length, rate limits, credits) without loading transformers and PyTorch, so each
supported architecture has a rule here, read from the model's own configuration files. The worker
checks at start that its engine's image encoder agrees with the rule, so the count the API charges
ahead is the count the worker reports, whichever engine serves the model.
"""

from __future__ import annotations

import json
import math
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Sequence

from shared.registry import VISION_MODEL_TYPES


class UnsupportedVisionModel(ValueError):
    """The model's architecture or processor configuration has no image-token rule here."""


class ImageTokenRule(ABC):
    placeholder: str  # what the chat template writes where an image goes
    image_token: str  # the token each of the image's features takes the place of

    @abstractmethod
    def image_text(self, width: int, height: int, detail: str = "auto") -> str:
        """The text an image's placeholder becomes (what the processor writes). Raises ValueError
        for an image the model cannot take (Qwen2-VL: a side under one patch grid cell)."""

    @abstractmethod
    def feature_tokens(self, width: int, height: int, detail: str = "auto") -> int:
        """How many image tokens (features of the vision tower) the image becomes, computed without
        building its text (the API checks every image of a request with it). Raises ValueError as
        image_text does."""

    @abstractmethod
    def describe(self) -> str:
        """What an image costs in prompt tokens, in a few words (for the pricing page)."""

    def check_placed(self, prompt: str, images: int) -> None:
        """Raise ValueError unless the rendered prompt holds one placeholder per image."""
        placed = prompt.count(self.placeholder)
        if placed != images:
            raise ValueError(f"the chat template placed {placed} image(s) for {images} image(s) in the messages")

    def expand(self, prompt: str, sizes: Sequence[tuple[int, int, str]]) -> str:
        """The prompt with each placeholder, in order, replaced by its image's text.

        `sizes` holds (width, height, detail) of each image. Raises ValueError when the rendered
        prompt does not hold one placeholder per image (a template that drops or adds images)."""
        self.check_placed(prompt, len(sizes))
        pieces = prompt.split(self.placeholder)
        out = [pieces[0]]
        for (width, height, detail), piece in zip(sizes, pieces[1:]):
            out.append(self.image_text(width, height, detail))
            out.append(piece)
        return "".join(out)


class FixedImageTokens(ImageTokenRule):
    """LLaVA (1.5, interleave, BakLLaVA, ...) and Gemma 3: every image is resized to the vision tower's
    input size and becomes the same number of image tokens, whatever its size or `detail`, written
    between the architecture's markers (`before`, `after`) if it has any."""

    def __init__(self, placeholder: str, tokens_per_image: int, image_token: str | None = None,
                 before: str = "", after: str = ""):
        if tokens_per_image <= 0:
            raise UnsupportedVisionModel("an image must take at least one token")
        self.placeholder = placeholder
        self.image_token = image_token or placeholder
        self.tokens_per_image = tokens_per_image
        self.before = before
        self.after = after

    def image_text(self, width: int, height: int, detail: str = "auto") -> str:
        return self.before + self.image_token * self.tokens_per_image + self.after

    def feature_tokens(self, width: int, height: int, detail: str = "auto") -> int:
        return self.tokens_per_image

    def describe(self) -> str:
        return f"{self.tokens_per_image:,} tokens per image"

    @classmethod
    def for_llava(cls, config: dict[str, Any], processor: dict[str, Any], image_processor: dict[str, Any]
                  ) -> "FixedImageTokens":
        """The count LlavaProcessor computes: one token per patch of the processed image, plus the
        backbone's extra tokens (CLS), less one when the "default" strategy drops the CLS feature."""
        patch = processor.get("patch_size") or config.get("vision_config", {}).get("patch_size")
        strategy = processor.get("vision_feature_select_strategy") or config.get("vision_feature_select_strategy",
                                                                                 "default")
        height, width = _processed_size(image_processor)
        if not patch:
            raise UnsupportedVisionModel("the LLaVA processor configuration names no patch_size")
        tokens = (height // patch) * (width // patch) + int(processor.get("num_additional_image_tokens") or 0)
        if strategy == "default":
            tokens -= 1
        return cls(processor.get("image_token") or "<image>", tokens)

    @classmethod
    def for_gemma3(cls, config: dict[str, Any], processor: dict[str, Any], image_processor: dict[str, Any]
                   ) -> "FixedImageTokens":
        """Gemma 3's processor: the template's `<start_of_image>` becomes a fixed run of soft tokens
        (the vision tower's pooled features) between the image markers, set apart by blank lines."""
        tokens = config.get("mm_tokens_per_image")
        if not isinstance(tokens, int):
            raise UnsupportedVisionModel("the Gemma 3 configuration names no mm_tokens_per_image")
        if processor.get("image_seq_length", tokens) != tokens:
            raise UnsupportedVisionModel(f"the processor writes {processor['image_seq_length']} tokens per image "
                                         f"where the model has {tokens}")
        if image_processor.get("do_pan_and_scan"):
            # Pan and scan adds crops, and so tokens, that depend on the image's shape.
            raise UnsupportedVisionModel("Gemma 3's pan-and-scan is not supported; set do_pan_and_scan false")
        return cls("<start_of_image>", tokens, image_token="<image_soft_token>",
                   before="\n\n<start_of_image>", after="<end_of_image>\n\n")


class PatchGridImageTokens(ImageTokenRule):
    """Qwen2-VL and Qwen2.5-VL: the image keeps its aspect ratio, resized to whole cells of
    (patch × merge) pixels within a pixel budget, and each cell becomes one image token."""

    placeholder = image_token = "<|image_pad|>"

    def __init__(self, patch_size: int, merge_size: int, min_pixels: int, max_pixels: int):
        if patch_size <= 0 or merge_size <= 0 or not 0 < min_pixels <= max_pixels:
            raise UnsupportedVisionModel(f"unusable image grid settings (patch_size={patch_size}, merge_size="
                                         f"{merge_size}, min_pixels={min_pixels}, max_pixels={max_pixels})")
        self.cell = patch_size * merge_size
        self.min_pixels = min_pixels
        self.max_pixels = max_pixels

    def resized(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) after the processor's resize: whole cells, aspect kept, inside the budget.

        Images under one cell on a side, or over 200:1, are refused: the processors (and ExLlamaV3's
        vision encoder) raise on them instead of resizing."""
        cell = self.cell
        if width < cell or height < cell:
            raise ValueError(f"this model needs images at least {cell}x{cell} pixels; one is {width}x{height}")
        if max(width, height) / min(width, height) > 200:
            raise ValueError(f"this model takes images up to an aspect ratio of 200:1; one is {width}x{height}")
        w_bar, h_bar = round(width / cell) * cell, round(height / cell) * cell
        if w_bar * h_bar > self.max_pixels:
            beta = math.sqrt(width * height / self.max_pixels)
            w_bar = max(cell, math.floor(width / beta / cell) * cell)
            h_bar = max(cell, math.floor(height / beta / cell) * cell)
        elif w_bar * h_bar < self.min_pixels:
            beta = math.sqrt(self.min_pixels / (width * height))
            w_bar = math.ceil(width * beta / cell) * cell
            h_bar = math.ceil(height * beta / cell) * cell
        return w_bar, h_bar

    def image_text(self, width: int, height: int, detail: str = "auto") -> str:
        return self.image_token * self.feature_tokens(width, height, detail)

    def feature_tokens(self, width: int, height: int, detail: str = "auto") -> int:
        w_bar, h_bar = self.resized(width, height)
        return (w_bar // self.cell) * (h_bar // self.cell)

    def describe(self) -> str:
        low, high = max(1, self.min_pixels // self.cell ** 2), self.max_pixels // self.cell ** 2
        return f"one token per {self.cell}x{self.cell} pixels, {low:,} to {high:,} tokens per image"

    @classmethod
    def for_qwen2_vl(cls, config: dict[str, Any], processor: dict[str, Any], image_processor: dict[str, Any]
                     ) -> "PatchGridImageTokens":
        """Read as Qwen2VLImageProcessor reads it: min/max_pixels when given, else size's edges
        (which hold pixel counts despite their names)."""
        vision = config.get("vision_config", {})
        patch = image_processor.get("patch_size") or vision.get("patch_size") or vision.get("spatial_patch_size")
        merge = image_processor.get("merge_size") or vision.get("spatial_merge_size")
        size = image_processor.get("size") or {}
        low = image_processor.get("min_pixels") or size.get("shortest_edge")
        high = image_processor.get("max_pixels") or size.get("longest_edge")
        if not all(isinstance(value, int) for value in (patch, merge, low, high)):
            raise UnsupportedVisionModel(f"the Qwen2-VL image processor configuration lacks patch_size, merge_size "
                                         f"or the pixel budget (size={size!r})")
        return cls(patch, merge, low, high)


def _processed_size(image_processor: dict[str, Any]) -> tuple[int, int]:
    """(height, width) every image has after the image processor (a fixed-size one)."""
    crop = image_processor.get("crop_size")
    if image_processor.get("do_center_crop") and isinstance(crop, dict) and "height" in crop:
        return int(crop["height"]), int(crop["width"])
    size = image_processor.get("size")
    if isinstance(size, dict) and "height" in size and "width" in size:
        return int(size["height"]), int(size["width"])
    raise UnsupportedVisionModel(f"the image processor does not resize to a fixed size (size={size!r}, "
                                 f"crop_size={crop!r})")


# One per architecture some engine serves images for (shared.registry.VISION_MODEL_TYPES).
RULES = {"llava": FixedImageTokens.for_llava, "gemma3": FixedImageTokens.for_gemma3,
         "qwen2_5_vl": PatchGridImageTokens.for_qwen2_vl}


def image_token_rule(directory: Path, engine: str | None = None) -> ImageTokenRule:
    """The rule of the model in `directory` (a Hugging Face model directory with its processor files),
    if `engine` (when given) serves images for its architecture."""
    directory = Path(directory)
    config = _read_json(directory / "config.json")
    if config is None:
        raise UnsupportedVisionModel(f"{directory} has no config.json")
    model_type = config.get("model_type")
    if model_type not in RULES:
        raise UnsupportedVisionModel(f"no image-token rule for model type {model_type!r} (supported: "
                                     f"{', '.join(sorted(RULES))})")
    served = VISION_MODEL_TYPES.get(engine, frozenset()) if engine is not None else RULES
    if model_type not in served:
        raise UnsupportedVisionModel(f"the {engine} engine serves images for model types "
                                     f"{', '.join(sorted(served)) or 'none'}; this model is {model_type!r}")
    processor = _read_json(directory / "processor_config.json") or {}
    # transformers 5 keeps the image processor's settings inside processor_config.json; older
    # checkpoints have them in preprocessor_config.json.
    image_processor = processor.get("image_processor") or _read_json(directory / "preprocessor_config.json") or {}
    return RULES[model_type](config, processor, image_processor)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise UnsupportedVisionModel(f"cannot read {path}: {exc}") from None
