"""Start-up checks every engine with vision runs before serving a model with images.

A vision model is served only where LlamaGate can count its image tokens ahead (the API charges
for them before a job is queued): the engine must serve the architecture (image_token_rule with the
engine's name checks that), the chat template must place images where the messages have them, and
the engine's own image encoder must produce as many image tokens as the API's rule counts.
"""

from __future__ import annotations

from typing import Callable

from PIL import Image

from shared.chat_tokenizer import ChatTokenizer
from shared.image_tokens import ImageTokenRule
from shared.images import DecodedImage

# Two shapes unlike each other (landscape, tall and odd-sized) that every supported rule accepts.
PROBE_SIZES = ((640, 480), (97, 311))


def check_template(tokenizer: ChatTokenizer, rule: ImageTokenRule) -> None:
    """Refuse a chat template that does not place images where the messages have them (or that
    loses the text around them): its answers would be about pictures it never saw."""
    probe = "Describe the picture in one word."
    text = tokenizer.render([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": probe}]}],
                            content_parts=True)
    if text.count(rule.placeholder) != 1 or probe not in text:
        raise RuntimeError(f"the model's chat template does not place an image as {rule.placeholder!r} "
                           "beside the text of a message; it cannot be served with images")


def probe_images() -> list[DecodedImage]:
    return [DecodedImage(Image.new("RGB", size, (200, 30, 30)), "PNG") for size in PROBE_SIZES]


def check_feature_counts(rule: ImageTokenRule, count_features: Callable[[DecodedImage], int]) -> None:
    """Refuse to serve a model whose encoder turns an image into another number of tokens than the
    rule the API counts (and charges) with: every request would be miscounted."""
    for image in probe_images():
        counted = rule.feature_tokens(image.width, image.height)
        produced = count_features(image)
        if produced != counted:
            raise RuntimeError(f"the model's image encoder makes {produced} tokens of a {image.width}x{image.height} "
                               f"image where LlamaGate's image-token rule ({type(rule).__name__}) counts {counted}; "
                               "this checkpoint is not supported")
