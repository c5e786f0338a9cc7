"""How many prompt tokens an image takes, for a vision model, computed without its processor.

A vision model's chat template writes a placeholder (LLaVA: `<image>`) where each image goes, and
the model's processor replaces it with the image's tokens. The API must know that count before it
queues a job (context length, rate limits, credits) without loading transformers and PyTorch, so
each supported architecture has a rule here, read from the model's own processor configuration.
The worker checks at start that its real processor agrees with the rule, so the count the API
charges ahead is the count the worker reports.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Sequence


class UnsupportedVisionModel(ValueError):
    """The model's architecture or processor configuration has no image-token rule here."""


class ImageTokenRule(ABC):
    placeholder: str  # what the chat template writes where an image goes

    @abstractmethod
    def image_text(self, width: int, height: int, detail: str = "auto") -> str:
        """The text an image's placeholder becomes (what the processor writes)."""

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
    """LLaVA (1.5, interleave, BakLLaVA, ...): every image is resized to the vision tower's input size
    and becomes the same number of image tokens, whatever its size or `detail`."""

    def __init__(self, placeholder: str, tokens_per_image: int):
        if tokens_per_image <= 0:
            raise UnsupportedVisionModel("an image must take at least one token")
        self.placeholder = placeholder
        self.tokens_per_image = tokens_per_image

    def image_text(self, width: int, height: int, detail: str = "auto") -> str:
        return self.placeholder * self.tokens_per_image

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


RULES = {"llava": FixedImageTokens.for_llava}


def image_token_rule(directory: Path) -> ImageTokenRule:
    """The rule of the model in `directory` (a Hugging Face model directory with its processor files)."""
    directory = Path(directory)
    config = _read_json(directory / "config.json")
    if config is None:
        raise UnsupportedVisionModel(f"{directory} has no config.json")
    model_type = config.get("model_type")
    if model_type not in RULES:
        raise UnsupportedVisionModel(f"no image-token rule for model type {model_type!r} (supported: "
                                     f"{', '.join(sorted(RULES))})")
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
