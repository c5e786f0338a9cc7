"""decode_image: the four formats decode to upright RGB; anything else, or anything over a cap, is refused."""

from __future__ import annotations

import io
import struct
import zlib

import pytest
from PIL import Image

from shared.images import ImageError, ImageLimits, check_image, decode_image

LIMITS = ImageLimits(max_bytes=1_000_000, max_pixels=1_000_000)


def encoded(image: Image.Image, image_format: str, **options) -> bytes:
    out = io.BytesIO()
    image.save(out, image_format, **options)
    return out.getvalue()


@pytest.mark.parametrize("image_format", ["PNG", "JPEG", "WEBP", "GIF"])
def test_each_supported_format_decodes_to_rgb_with_its_size(image_format):
    decoded = decode_image(encoded(Image.new("RGB", (40, 30), (10, 200, 30)), image_format), LIMITS)
    assert decoded.format == image_format
    assert (decoded.width, decoded.height) == (40, 30)
    assert decoded.image.mode == "RGB"
    assert decoded.media_type == {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp",
                                  "GIF": "image/gif"}[image_format]


def test_an_animated_gif_gives_its_first_frame():
    frames = [Image.new("RGB", (8, 8), color) for color in ((255, 0, 0), (0, 0, 255))]
    data = encoded(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50)
    pixel = decode_image(data, LIMITS).image.getpixel((4, 4))
    assert pixel[0] > 200 and pixel[2] < 50  # red, the first frame


def test_transparent_pixels_land_on_white():
    image = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    assert decode_image(encoded(image, "PNG"), LIMITS).image.getpixel((0, 0)) == (255, 255, 255)


def test_exif_orientation_is_applied():
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to view
    data = encoded(Image.new("RGB", (60, 20)), "JPEG", exif=exif.tobytes())
    decoded = decode_image(data, LIMITS)
    assert (decoded.width, decoded.height) == (20, 60)
    assert (check_image(data, LIMITS).width, check_image(data, LIMITS).height) == (20, 60)


@pytest.mark.parametrize("image_format", ["PNG", "JPEG", "WEBP", "GIF"])
def test_checking_gives_the_format_and_size_decoding_would(image_format):
    data = encoded(Image.new("RGB", (40, 30), (10, 200, 30)), image_format)
    checked, decoded = check_image(data, LIMITS), decode_image(data, LIMITS)
    assert (checked.format, checked.width, checked.height) == (decoded.format, decoded.width, decoded.height)
    assert checked.media_type == decoded.media_type


@pytest.mark.parametrize("image_format", ["BMP", "TIFF", "ICO"])
def test_other_formats_are_refused(image_format):
    with pytest.raises(ImageError) as caught:
        decode_image(encoded(Image.new("RGB", (16, 16)), image_format), LIMITS)
    assert caught.value.code == "invalid_image_format"
    assert "PNG, JPEG, WebP or GIF" in str(caught.value)


@pytest.mark.parametrize("read", [check_image, decode_image])
@pytest.mark.parametrize("data", [b"", b"not an image at all", b"\x89PNG\r\n\x1a\n" + b"\x00" * 40])
def test_garbage_is_refused(data, read):
    with pytest.raises(ImageError):
        read(data, LIMITS)


@pytest.mark.parametrize("read", [check_image, decode_image])
def test_a_truncated_file_is_refused(read):
    data = encoded(Image.effect_noise((64, 64), 50).convert("RGB"), "PNG")
    with pytest.raises(ImageError) as caught:
        read(data[:len(data) // 2], LIMITS)
    assert caught.value.code == "invalid_image_format"


def test_bytes_over_the_cap_are_refused():
    data = encoded(Image.effect_noise((64, 64), 50).convert("RGB"), "PNG")
    with pytest.raises(ImageError) as caught:
        decode_image(data, ImageLimits(max_bytes=len(data) - 1, max_pixels=10**9))
    assert caught.value.code == "image_too_large"


def test_pixels_over_the_cap_are_refused():
    with pytest.raises(ImageError) as caught:
        decode_image(encoded(Image.new("RGB", (101, 100)), "PNG"), ImageLimits(max_bytes=10**6, max_pixels=10_000))
    assert caught.value.code == "image_too_large"
    assert "101x100" in str(caught.value)


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims a huge image (a decompression bomb's first step)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit greyscale
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + \
        chunk(b"IEND", b"")


@pytest.mark.parametrize("read", [check_image, decode_image])
def test_a_decompression_bomb_is_refused_from_its_header_with_the_default_cap(settings, read):
    data = png_claiming(100_000, 100_000)  # 10 gigapixels in a hundred bytes
    assert len(data) < 200
    with pytest.raises(ImageError) as caught:
        read(data, ImageLimits(settings.image_max_bytes, settings.image_max_pixels))
    assert caught.value.code == "image_too_large"


@pytest.mark.parametrize("read", [check_image, decode_image])
def test_a_bomb_under_pillows_own_guard_is_refused_by_ours(read):
    data = png_claiming(8_000, 8_000)  # 64 megapixels: Pillow would only warn
    with pytest.raises(ImageError) as caught:
        read(data, ImageLimits(10**6, 25_000_000))
    assert caught.value.code == "image_too_large"
    assert "8000x8000" in str(caught.value)
