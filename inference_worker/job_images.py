"""A chat job's images, as the worker receives them: inline in the job, or fetched from Redis.

Called from the job's actor thread, so the generation loop never waits on Redis or on decoding.
The API checked every image already; decoding them again here, with the same limits, keeps a
worker safe from a job that did not come through the API.
"""

from __future__ import annotations

import base64

import redis

from broker.contracts import GenerationJob
from shared.images import DecodedImage, ImageError, ImageLimits, decode_image
from shared.settings import Settings


class ImagesUnavailable(Exception):
    """An image of the job is missing (its Redis key expired) or does not decode."""


def load_job_images(job: GenerationJob, client: redis.Redis, settings: Settings) -> list[DecodedImage]:
    if not job.images:
        return []
    keys = [image.key for image in job.images if image.key]
    stored = dict(zip(keys, client.mget(keys))) if keys else {}
    limits = ImageLimits(settings.image_max_bytes, settings.image_max_pixels)
    decoded = []
    for index, image in enumerate(job.images):
        data = base64.b64decode(image.data) if image.data is not None else stored.get(image.key)
        if data is None:
            raise ImagesUnavailable(f"image {index} of the job is no longer available (its Redis key expired)")
        try:
            decoded.append(decode_image(data, limits))
        except ImageError as exc:
            raise ImagesUnavailable(f"image {index} of the job does not decode: {exc}") from None
    return decoded
