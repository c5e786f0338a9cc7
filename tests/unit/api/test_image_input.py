"""load_request_images: every image of a request checked before anything is queued, each refusal a
400 that names the part; accepted images become {"type": "image"} parts and checked bytes."""

from __future__ import annotations

import base64
import dataclasses
import io

import pytest
from PIL import Image

from api.image_fetch import FetchedImage, FetchError
from api.image_input import load_request_images
from shared.errors import InvalidRequestError, RateLimitError
from shared.settings import Settings


def encoded(image_format: str = "PNG", size: tuple[int, int] = (32, 24)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (10, 120, 200)).save(out, image_format)
    return out.getvalue()


def data_url(data: bytes, media_type: str = "image/png") -> str:
    return f"data:{media_type};base64,{base64.b64encode(data).decode()}"


def image_part(url: str, **fields) -> dict:
    return {"type": "image_url", "image_url": {"url": url, **fields}}


def user(*parts) -> dict:
    return {"role": "user", "content": [{"type": "text", "text": p} if isinstance(p, str) else p for p in parts]}


@pytest.fixture
def vision_spec(default_spec):
    return dataclasses.replace(default_spec, id="vision-model", capabilities=frozenset({"chat", "vision"}))


class FakeFetcher:
    """Answers every URL with the given bytes (or error), recording what it was asked."""

    def __init__(self, answer: bytes | FetchError):
        self.answer = answer
        self.urls: list[str] = []

    def fetch(self, url: str) -> FetchedImage:
        self.urls.append(url)
        if isinstance(self.answer, FetchError):
            raise self.answer
        return FetchedImage(self.answer, "image/png", url)


def refusal(messages, spec, settings, fetcher=None, before_fetching=None) -> InvalidRequestError:
    with pytest.raises(InvalidRequestError) as caught:
        load_request_images(messages, spec, settings, fetcher, before_fetching)
    assert caught.value.status == 400
    return caught.value


def test_a_conversation_without_images_is_left_as_it_is(default_spec, settings):
    messages = [{"role": "user", "content": "Hi"}, user("Hello")]
    loaded = load_request_images(messages, default_spec, settings)
    assert loaded.messages == tuple(messages) and loaded.images == ()


@pytest.mark.parametrize("image_format, media_type", [("PNG", "image/png"), ("JPEG", "image/jpeg"),
                                                      ("WEBP", "image/webp"), ("GIF", "image/gif")])
def test_data_urls_of_each_format_are_decoded_and_replaced_by_image_parts(vision_spec, settings, image_format,
                                                                         media_type):
    data = encoded(image_format, (40, 30))
    messages = [{"role": "system", "content": "Be brief."},
                user("What is this?", image_part(data_url(data, media_type), detail="low"))]
    loaded = load_request_images(messages, vision_spec, settings)
    assert loaded.messages == (messages[0], user("What is this?", {"type": "image"}))
    (image,) = loaded.images
    assert (image.data, image.media_type, image.width, image.height) == (data, media_type, 40, 30)
    assert image.detail == "low" and image.param == "messages[1].content[1]"
    assert messages[1]["content"][1]["type"] == "image_url", "the request itself is left unchanged"


def test_several_images_across_messages_keep_their_order(vision_spec, settings):
    small, large = encoded(size=(8, 8)), encoded(size=(64, 16))
    loaded = load_request_images([user(image_part(data_url(small)), "and"),
                                  {"role": "assistant", "content": "ok"},
                                  user(image_part(data_url(large)))], vision_spec, settings)
    assert [(i.width, i.height, i.param) for i in loaded.images] == [
        (8, 8, "messages[0].content[0]"), (64, 16, "messages[2].content[0]")]
    assert loaded.images[0].detail == "auto"


def test_an_image_for_a_model_without_vision_names_the_part(default_spec, settings):
    error = refusal([user("Look:", image_part(data_url(encoded())))], default_spec, settings)
    assert error.param == "messages[0].content[1]"
    assert "does not accept images" in error.message


def test_too_many_images_names_the_first_one_over_the_limit(vision_spec):
    settings = Settings.from_env({}, max_images_per_request=2)
    part = image_part(data_url(encoded()))
    error = refusal([user(part, part), user(part)], vision_spec, settings)
    assert error.code == "too_many_images" and error.param == "messages[1].content[0]"
    assert "at most 2" in error.message


@pytest.mark.parametrize("url, code, words", [
    ("data:text/plain;base64,aGVsbG8=", "invalid_image_format", "Unsupported image type 'text/plain'"),
    ("data:image/bmp;base64,Qk0=", "invalid_image_format", "Unsupported image type 'image/bmp'"),
    ("data:image/png,rawbytes", "invalid_image_url", "expected data:image/<format>;base64,<data>"),
    ("data:image/png;base64,@@@notbase64@@@", "invalid_image_url", "not valid base64"),
    ("data:image/png;base64," + base64.b64encode(b"\x89PNG\r\n\x1a\n garbage").decode(), "invalid_image_format",
     "could not be decoded"),
    ("data:image/png;base64," + base64.b64encode(encoded("BMP")).decode(), "invalid_image_format",
     "could not be decoded"),
    ("file:///etc/passwd", "invalid_image_url", "Unsupported image URL scheme 'file'"),
    ("ftp://example.com/cat.png", "invalid_image_url", "Unsupported image URL scheme 'ftp'"),
    ("gopher://example.com/", "invalid_image_url", "Unsupported image URL scheme 'gopher'"),
    ("cat.png", "invalid_image_url", "Unsupported image URL scheme"),
])
def test_unusable_urls_are_refused_naming_the_url(vision_spec, settings, url, code, words):
    error = refusal([user("Hi", image_part(url))], vision_spec, settings, FakeFetcher(encoded()))
    assert error.param == "messages[0].content[1].image_url.url"
    assert error.code == code
    assert words in error.message


def test_a_data_url_over_the_byte_cap_is_refused_before_decoding(vision_spec):
    settings = Settings.from_env({}, image_max_bytes=1000)
    # Too large as base64 and not valid base64 either: only the check before decoding names the size.
    huge = "data:image/png;base64," + "@" * 8000
    error = refusal([user(image_part(huge))], vision_spec, settings)
    assert error.code == "image_too_large" and "limit is 1,000 bytes" in error.message


def test_an_image_over_the_pixel_cap_is_refused(vision_spec):
    settings = Settings.from_env({}, image_max_pixels=100)
    error = refusal([user(image_part(data_url(encoded(size=(11, 10)))))], vision_spec, settings)
    assert error.code == "image_too_large" and "11x10" in error.message


def test_http_urls_are_fetched_by_the_fetcher(vision_spec, settings):
    fetcher = FakeFetcher(encoded(size=(5, 7)))
    loaded = load_request_images([user(image_part("https://images.example.com/cat.png"))], vision_spec, settings,
                                 fetcher)
    assert fetcher.urls == ["https://images.example.com/cat.png"]
    assert (loaded.images[0].width, loaded.images[0].height) == (5, 7)


def test_a_fetch_failure_is_a_400_naming_the_url(vision_spec, settings):
    fetcher = FakeFetcher(FetchError("The image URL is not allowed: the address 10.0.0.1 is a private address."))
    error = refusal([user(image_part("http://intranet.example/cat.png"))], vision_spec, settings, fetcher)
    assert error.param == "messages[0].content[0].image_url.url"
    assert "10.0.0.1 is a private address" in error.message and error.code == "invalid_image_url"


def test_fetched_bytes_are_checked_like_data_urls(vision_spec, settings):
    error = refusal([user(image_part("http://example.com/cat.png"))], vision_spec, settings,
                    FakeFetcher(b"<html>not an image</html>"))
    assert error.code == "invalid_image_format"


def test_with_fetching_off_an_http_url_is_refused_and_not_fetched(vision_spec):
    settings = Settings.from_env({"LLAMAGATE_IMAGE_FETCH": "off"})
    fetcher = FakeFetcher(encoded())
    error = refusal([user(image_part("https://images.example.com/cat.png"))], vision_spec, settings, fetcher)
    assert "does not fetch image URLs" in error.message and "data URL" in error.message
    assert fetcher.urls == []


def test_the_first_bad_image_in_request_order_is_reported(vision_spec, settings):
    good, bad = image_part(data_url(encoded())), image_part("data:image/png;base64,AAAA")
    error = refusal([user(good, bad), user(bad)], vision_spec, settings)
    assert error.param == "messages[0].content[1].image_url.url"


def test_the_hook_before_fetching_runs_once_before_any_fetch_and_can_stop_them_all(vision_spec, settings):
    fetcher = FakeFetcher(encoded())
    seen: list[list[str]] = []
    parts = [image_part(data_url(encoded())), image_part("https://a.example/1.png"), image_part("https://b.example/2.png")]
    load_request_images([user(*parts)], vision_spec, settings, fetcher, before_fetching=lambda: seen.append(
        list(fetcher.urls)))
    assert seen == [[]] and len(fetcher.urls) == 2

    def over_the_limit():
        raise RateLimitError("Rate limit reached: 60 requests per window.", type_="requests")
    fetcher.urls.clear()
    with pytest.raises(RateLimitError):
        load_request_images([user(*parts)], vision_spec, settings, fetcher, before_fetching=over_the_limit)
    assert fetcher.urls == []


def test_the_hook_before_fetching_is_skipped_without_a_url_to_fetch_or_after_a_refusal(vision_spec, settings):
    def must_not_run():
        raise AssertionError("nothing is fetched")
    load_request_images([user(image_part(data_url(encoded())))], vision_spec, settings, FakeFetcher(encoded()),
                        before_fetching=must_not_run)
    error = refusal([user(image_part("https://a.example/1.png"), image_part("ftp://b.example/2.png"))],
                    vision_spec, settings, FakeFetcher(encoded()), must_not_run)
    assert error.param == "messages[0].content[1].image_url.url"
