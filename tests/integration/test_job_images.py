"""A job's images from the API to the worker through real Redis: small ones inside the job, large ones
under keys with a TTL; the worker decodes what the API checked, and a lost image is an error."""

from __future__ import annotations

import base64
import io
import uuid

import pytest
from PIL import Image

from api.image_input import RequestImage, forget_job_images, job_images
from broker.contracts import GenerationJob, SamplingParams
from inference_worker.job_images import ImagesUnavailable, load_job_images
from shared.settings import Settings


def request_image(size: tuple[int, int], noise: bool = False) -> RequestImage:
    picture = Image.effect_noise(size, 80).convert("RGB") if noise else Image.new("RGB", size, (1, 2, 3))
    out = io.BytesIO()
    picture.save(out, "PNG")
    return RequestImage(out.getvalue(), "image/png", size[0], size[1], "high", "messages[0].content[0]")


def job_with(images) -> GenerationJob:
    return GenerationJob(request_id="r", model="m", messages=(), sampling=SamplingParams(), reply_to="c",
                         images=images)


def test_small_images_travel_inline_and_large_ones_through_redis(redis_client):
    request_id = uuid.uuid4().hex
    small, large = request_image((8, 8)), request_image((300, 300), noise=True)
    assert len(small.data) < 1000 < len(large.data)
    images = job_images((small, large), request_id, redis_client, inline_max_bytes=1000, ttl=90)
    assert base64.b64decode(images[0].data) == small.data and images[0].key is None
    assert images[1].data is None and redis_client.get(images[1].key) == large.data
    assert 85 <= redis_client.ttl(images[1].key) <= 90
    assert (images[1].width, images[1].height, images[1].detail) == (300, 300, "high")

    # The job crosses RabbitMQ as JSON; the worker reads the images back, decoded.
    job = GenerationJob.from_payload(job_with(images).to_payload())
    decoded = load_job_images(job, redis_client, Settings.from_env({}))
    assert [(d.width, d.height) for d in decoded] == [(8, 8), (300, 300)]
    assert decoded[1].image.tobytes() == Image.open(io.BytesIO(large.data)).convert("RGB").tobytes()

    forget_job_images(images, redis_client)
    assert redis_client.exists(images[1].key) == 0


def test_an_image_gone_from_redis_makes_the_job_fail(redis_client):
    images = job_images((request_image((50, 50), noise=True),), uuid.uuid4().hex, redis_client,
                        inline_max_bytes=0, ttl=60)
    redis_client.delete(images[0].key)
    with pytest.raises(ImagesUnavailable, match="no longer available"):
        load_job_images(job_with(images), redis_client, Settings.from_env({}))


def test_the_worker_applies_its_own_caps_too(redis_client):
    images = job_images((request_image((40, 40)),), uuid.uuid4().hex, redis_client, inline_max_bytes=10**6, ttl=60)
    with pytest.raises(ImagesUnavailable, match="does not decode"):
        load_job_images(job_with(images), redis_client, Settings.from_env({}, image_max_pixels=100))
