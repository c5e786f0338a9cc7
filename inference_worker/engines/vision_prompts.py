"""Prompts with images for the transformers engine: the model's own processor builds the image tokens
and pixel values from the prompt LlamaGate rendered (with the model's chat template)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import torch

from inference_worker.engines.base import Prompt
from inference_worker.engines.vision_checks import check_template, probe_images
from shared.chat_tokenizer import ChatTokenizer
from shared.image_tokens import ImageTokenRule, image_token_rule
from shared.images import DecodedImage

log = logging.getLogger(__name__)

# Keys of the processor's output that are not prefill inputs of the model.
TEXT_KEYS = ("input_ids", "attention_mask", "token_type_ids")


class VisionPrompts:
    def __init__(self, processor: Any, rule: ImageTokenRule, tokenizer: ChatTokenizer):
        self.processor = processor
        self.rule = rule
        self.tokenizer = tokenizer

    @classmethod
    def load(cls, directory: Path, tokenizer: ChatTokenizer) -> "VisionPrompts":
        from transformers import AutoProcessor

        rule = image_token_rule(directory, "transformers")
        prompts = cls(AutoProcessor.from_pretrained(str(directory)), rule, tokenizer)
        check_template(tokenizer, rule)
        prompts.check_rule()
        return prompts

    def prompt(self, text: str, images: Sequence[DecodedImage]) -> Prompt:
        """Token ids and pixel inputs for `text` (which holds one placeholder per image, in order)."""
        self.rule.check_placed(text, len(images))
        inputs = self.processor(text=[text], images=[image.image for image in images], add_special_tokens=False,
                                return_tensors="pt")
        ids = inputs["input_ids"][0].tolist()
        model_inputs = {key: value for key, value in inputs.items()
                        if key not in TEXT_KEYS and isinstance(value, torch.Tensor)}
        return Prompt(ids, model_inputs)

    def check_rule(self) -> None:
        """Refuse to serve a model whose processor counts image tokens differently from the rule the
        API counts (and charges) with: every request would be miscounted."""
        text = f"Look: {self.rule.placeholder} and {self.rule.placeholder}."
        images = probe_images()
        built = self.prompt(text, images).ids
        counted = self.tokenizer.encode(self.rule.expand(text, [(i.width, i.height, "auto") for i in images]))
        if built != counted:
            raise RuntimeError(f"the model's processor builds {len(built)} prompt tokens where LlamaGate's image-token "
                               f"rule ({type(self.rule).__name__}) counts {len(counted)}; this checkpoint's "
                               "processor is not supported")
        log.info("image-token rule agrees with the processor", extra={"rule": type(self.rule).__name__})


def concatenate_inputs(per_request: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """One prefill's model inputs from its requests' (pixel values of every image, in row order)."""
    present = [inputs for inputs in per_request if inputs]
    if not present:
        return {}
    return {key: torch.cat([inputs[key] for inputs in present]) for key in present[0]}


def can_join(batch_inputs: Sequence[dict[str, torch.Tensor]], candidate: dict[str, torch.Tensor]) -> bool:
    """Whether a request's inputs concatenate with those already in a prefill (same keys and shapes)."""
    if not candidate:
        return True
    for inputs in batch_inputs:
        if inputs:
            return inputs.keys() == candidate.keys() and all(
                inputs[key].shape[1:] == candidate[key].shape[1:] for key in inputs)
    return True
