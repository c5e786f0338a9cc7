"""The images of a chat request: found, checked, fetched and decoded before anything is queued.

Each `image_url` part becomes a checked `RequestImage` (the file's bytes, verified by decoding
them) and, in the messages sent to the worker, a bare `{"type": "image"}` part: the shape chat
templates of vision models expect. Everything that can go wrong is a 400 naming the part.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
from dataclasses import dataclass
from typing import Any, Callable, Optional

import gevent
import gevent.pool
import redis

from api.image_fetch import ImageFetcher
from api.schemas.chat import image_parts
from broker.contracts import JobImage
from broker.naming import image_key
from shared.errors import InvalidRequestError
from shared.images import MEDIA_TYPES, SUPPORTED, CheckedImage, ImageError, ImageLimits, check_image, too_large
from shared.registry import ModelSpec
from shared.settings import Settings

log = logging.getLogger(__name__)

DATA_URL = re.compile(r"data:(?P<media_type>[\w.+-]+/[\w.+-]+)?(?:;[^;,]*)*?;base64,(?P<data>.*)",
                      re.DOTALL | re.IGNORECASE)
FETCH_CONCURRENCY = 4  # images of one request fetched at once


@dataclass(frozen=True)
class RequestImage:
    data: bytes  # the image file, as sent or fetched, verified by decoding it
    media_type: str  # the format it decoded as
    width: int
    height: int
    detail: str
    param: str  # where the request holds it: messages[1].content[0]


@dataclass(frozen=True)
class ImageLoader:
    load: Callable[[], tuple[bytes, CheckedImage]]
    fetches: bool  # goes to the network


@dataclass(frozen=True)
class ImageInput:
    messages: tuple[dict[str, Any], ...]  # image parts replaced by {"type": "image"}
    images: tuple[RequestImage, ...] = ()


def load_request_images(messages: list[dict[str, Any]], spec: ModelSpec, settings: Settings,
                        fetcher: Optional[ImageFetcher] = None,
                        before_fetching: Optional[Callable[[], None]] = None) -> ImageInput:
    """Check and load every image of a conversation; raises InvalidRequestError naming the part.
    `before_fetching` runs once, after the checks that need no I/O, if an image is to be fetched."""
    found = [(f"messages[{m}].content[{p}]", part)
             for m, message in enumerate(messages) for p, part in image_parts(message.get("content"))]
    if not found:
        return ImageInput(tuple(messages))
    if not spec.supports("vision"):
        raise InvalidRequestError(f"The model `{spec.id}` does not accept images (content parts of type "
                                  "'image_url'); use a model with the vision capability.", param=found[0][0])
    if len(found) > settings.max_images_per_request:
        raise InvalidRequestError(f"Too many images: at most {settings.max_images_per_request} per request, "
                                  f"got {len(found)}.", param=found[settings.max_images_per_request][0],
                                  code="too_many_images")
    limits = ImageLimits(settings.image_max_bytes, settings.image_max_pixels)
    loaders = [_loader(param, part["image_url"]["url"], limits, settings, fetcher) for param, part in found]
    if before_fetching is not None and any(loader.fetches for loader in loaders):
        before_fetching()
    decoded = _run_all([loader.load for loader in loaders])
    images = tuple(RequestImage(data, image.media_type, image.width, image.height,
                                part["image_url"].get("detail", "auto"), param)
                   for (param, part), (data, image) in zip(found, decoded))
    return ImageInput(tuple(_without_image_urls(m) for m in messages), images)


def _loader(param: str, url: str, limits: ImageLimits, settings: Settings,
            fetcher: Optional[ImageFetcher]) -> ImageLoader:
    """What loads one image; refusals that need no I/O happen now, in request order."""
    url_param = f"{param}.image_url.url"
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme == "data":
        data = _data_url_bytes(url, limits.max_bytes, url_param)
        return ImageLoader(lambda: (data, _decode(data, limits, url_param)), fetches=False)
    if scheme in ("http", "https"):
        if not settings.image_fetch_enabled or fetcher is None:
            raise InvalidRequestError("This server does not fetch image URLs; send the image as a base64 data URL "
                                      "(data:image/png;base64,...).", param=url_param, code="invalid_image_url")

        def fetch_and_decode() -> tuple[bytes, CheckedImage]:
            try:
                fetched = fetcher.fetch(url)
            except ImageError as exc:
                raise InvalidRequestError(str(exc), param=url_param, code=exc.code) from None
            return fetched.data, _decode(fetched.data, limits, url_param)
        return ImageLoader(fetch_and_decode, fetches=True)
    raise InvalidRequestError(f"Unsupported image URL scheme {scheme or url[:16]!r}: send a base64 data URL "
                              "(data:image/png;base64,...) or an http(s) URL.", param=url_param,
                              code="invalid_image_url")


def _data_url_bytes(url: str, max_bytes: int, param: str) -> bytes:
    match = DATA_URL.fullmatch(url)
    if not match:
        raise InvalidRequestError("Invalid image data URL: expected data:image/<format>;base64,<data>.",
                                  param=param, code="invalid_image_url")
    media_type = (match["media_type"] or "").lower()
    if media_type not in MEDIA_TYPES:
        raise InvalidRequestError(f"Unsupported image type {media_type or 'none'!r} in the data URL; send a "
                                  f"{SUPPORTED} image.", param=param, code="invalid_image_format")
    encoded = match["data"]
    if len(encoded) // 4 * 3 > max_bytes + 2:  # refused before decoding a huge string
        raise InvalidRequestError(str(too_large(len(encoded) // 4 * 3, max_bytes)), param=param,
                                  code="image_too_large")
    try:
        return base64.b64decode("".join(encoded.split()), validate=True)  # line breaks allowed
    except (binascii.Error, ValueError):
        raise InvalidRequestError("Invalid image data URL: the data is not valid base64.", param=param,
                                  code="invalid_image_url") from None


def _decode(data: bytes, limits: ImageLimits, param: str) -> CheckedImage:
    """Decode in gevent's thread pool: Pillow releases the GIL, so the process keeps serving streams."""
    outcome = gevent.get_hub().threadpool.apply(_check_or_refusal, (data, limits))
    if isinstance(outcome, ImageError):
        raise InvalidRequestError(f"Invalid image: {outcome}", param=param, code=outcome.code) from None
    return outcome


def _check_or_refusal(data: bytes, limits: ImageLimits) -> CheckedImage | ImageError:
    # Returned, not raised: gevent's thread pool prints a traceback for every exception it carries.
    try:
        return check_image(data, limits)
    except ImageError as exc:
        return exc


def _run_all(loaders: list[Callable[[], tuple[bytes, CheckedImage]]]) -> list[tuple[bytes, CheckedImage]]:
    """Run the loaders a few at a time; the first failure in request order is the one reported."""
    if len(loaders) == 1:
        return [loaders[0]()]
    pool = gevent.pool.Pool(FETCH_CONCURRENCY)
    outcomes = pool.map(_outcome, loaders)
    for outcome in outcomes:
        if isinstance(outcome, InvalidRequestError):
            raise outcome
    return outcomes


def _outcome(loader: Callable[[], tuple[bytes, CheckedImage]]) -> "tuple[bytes, CheckedImage] | InvalidRequestError":
    # Returned, not raised: gevent prints a traceback for every greenlet that dies of an exception.
    try:
        return loader()
    except InvalidRequestError as exc:
        return exc


def _without_image_urls(message: dict[str, Any]) -> dict[str, Any]:
    content = message.get("content")
    if not image_parts(content):
        return message
    return dict(message, content=[{"type": "image"} if part.get("type") == "image_url" else part
                                  for part in content])


def job_images(images: tuple[RequestImage, ...], request_id: str, client: redis.Redis, inline_max_bytes: int,
               ttl: float) -> tuple[JobImage, ...]:
    """The images as the job carries them: small ones inline, large ones under Redis keys (with a
    TTL that outlives the job's queueing and generation, redeliveries included)."""
    result = []
    stored = {}
    for index, image in enumerate(images):
        fields = dict(media_type=image.media_type, width=image.width, height=image.height, detail=image.detail)
        if len(image.data) <= inline_max_bytes:
            result.append(JobImage(**fields, data=base64.b64encode(image.data).decode("ascii")))
        else:
            key = image_key(request_id, index)
            stored[key] = image.data
            result.append(JobImage(**fields, key=key))
    if stored:
        pipe = client.pipeline(transaction=False)
        for key, data in stored.items():
            pipe.set(key, data, ex=max(1, int(ttl)))
        pipe.execute()
    return tuple(result)


def forget_job_images(images: tuple[JobImage, ...], client: redis.Redis) -> None:
    """Delete a finished job's images from Redis now instead of at their TTL (best effort)."""
    keys = [image.key for image in images if image.key]
    if keys:
        try:
            client.delete(*keys)
        except redis.RedisError:
            log.warning("could not delete a job's images; they expire on their own")
