"""Images in ExLlamaV3 prompts: the model's own vision encoder turns each image into embeddings,
and the prompt carries them as ExLlamaV3 expects, as ids it maps to their rows.

The prompt's text is built exactly as the API counted it (the rendered template, each placeholder
expanded by the model's image-token rule), so its length is the count the API charged for. Each
image's run of image tokens in it is then swapped for the ids ExLlamaV3 gave that image's
embeddings. Encoding runs on the generation loop's thread, when the engine takes the request:
the encoder shares the GPU with the generator, and ExLlamaV3 makes no promise that two of its
models may run at once from two threads.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, Sequence

from inference_worker.engines.base import EngineRequest, Prompt
from inference_worker.engines.vision_checks import check_feature_counts, check_template
from shared.chat_tokenizer import ChatTokenizer
from shared.errors import InvalidRequestError, ServerError
from shared.image_tokens import ImageTokenRule, image_token_rule
from shared.images import DecodedImage

log = logging.getLogger(__name__)


def splice_features(ids: Sequence[int], image_token_id: int, features: Sequence[range]) -> list[int]:
    """`ids` with its image tokens, in order, replaced by each image's feature ids.

    Runs of image tokens are assigned by count, not by run, so two images side by side (one run in
    the ids) are split where the first one's features end."""
    positions = [i for i, token in enumerate(ids) if token == image_token_id]
    wanted = sum(len(feature_ids) for feature_ids in features)
    if len(positions) != wanted:
        raise ValueError(f"the prompt holds {len(positions)} image tokens where its images have {wanted} features")
    spliced = list(ids)
    replacements = (feature_id for feature_ids in features for feature_id in feature_ids)
    for position, feature_id in zip(positions, replacements):
        spliced[position] = feature_id
    return spliced


class ExLlamaV3Vision:
    def __init__(self, encoder: Any, library_tokenizer: Any, rule: ImageTokenRule, tokenizer: ChatTokenizer):
        self.encoder = encoder  # exllamav3's vision component of the model
        self.library_tokenizer = library_tokenizer
        self.rule = rule
        self.tokenizer = tokenizer
        image_token_id = tokenizer.token_id(rule.image_token)
        if image_token_id is None:
            raise RuntimeError(f"the tokenizer has no {rule.image_token!r} token for the image-token rule")
        self.image_token_id = image_token_id

    @classmethod
    def load(cls, config: Any, directory: Path, tokenizer: ChatTokenizer, library_tokenizer: Any) -> "ExLlamaV3Vision":
        from exllamav3 import Model

        rule = image_token_rule(directory, "exllamav3")
        check_template(tokenizer, rule)
        encoder = Model.from_config(config, component="vision")
        encoder.load()
        vision = cls(encoder, library_tokenizer, rule, tokenizer)
        check_feature_counts(rule, lambda image: vision.embed([image])[0].mm_length)
        log.info("vision encoder loaded", extra={"rule": rule.describe()})
        return vision

    def prompt(self, text: str, images: Sequence[DecodedImage]) -> Prompt:
        """The prompt's ids with a run of image tokens per image, and the images to encode once the
        engine takes the request. Runs in an actor's thread: text only, nothing on the GPU."""
        expanded = self.rule.expand(text, [(image.width, image.height, "auto") for image in images])
        return Prompt(self.tokenizer.encode(expanded), {"images": tuple(images)})

    def embed(self, images: Sequence[DecodedImage]) -> list[Any]:
        return [self.encoder.get_image_embeddings(tokenizer=self.library_tokenizer, image=image.image)
                for image in images]

    def encoded(self, request: EngineRequest) -> EngineRequest:
        """The request with its images encoded: feature ids in its prompt, embeddings for its jobs."""
        images = request.model_inputs.get("images", ())
        try:
            embeddings = self.embed(images)
            ids = splice_features(request.prompt_ids, self.image_token_id,
                                  [range(e.first_index, e.last_index) for e in embeddings])
        except ValueError as exc:
            raise InvalidRequestError(f"Could not encode the images: {exc}", param="messages") from None
        except Exception as exc:  # noqa: BLE001 - one request's images must not fail the batch
            log.exception("image encoding failed")
            raise ServerError("The model failed while reading the images of this request.") from exc
        return dataclasses.replace(request, prompt_ids=ids, model_inputs={"embeddings": embeddings})
