"""Image files from requests: decoded and checked with Pillow, the same way in the API and the workers.

Only PNG, JPEG, WebP and GIF are accepted (of animated files, the first frame). The pixel count is
read from the header and checked before anything is decoded, so a small file that would expand
into gigabytes (a decompression bomb) is refused without being expanded.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from dataclasses import dataclass
from typing import Iterator

from PIL import Image, ImageOps, UnidentifiedImageError

# Pillow's format names, by the media type a data URL or an HTTP response names.
MEDIA_TYPES = {"image/png": "PNG", "image/jpeg": "JPEG", "image/jpg": "JPEG", "image/webp": "WEBP",
               "image/gif": "GIF"}
FORMAT_MEDIA_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp", "GIF": "image/gif"}
FORMATS = tuple(FORMAT_MEDIA_TYPES)
SUPPORTED = "PNG, JPEG, WebP or GIF"


class ImageError(ValueError):
    """An image that cannot be used: undecodable, of another format, or over a cap."""

    def __init__(self, message: str, code: str = "invalid_image_format"):
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class ImageLimits:
    max_bytes: int
    max_pixels: int


@dataclass(frozen=True)
class DecodedImage:
    image: Image.Image  # RGB, first frame, turned upright as its EXIF orientation says
    format: str  # Pillow's name: PNG, JPEG, WEBP, GIF

    @property
    def width(self) -> int:
        return self.image.width

    @property
    def height(self) -> int:
        return self.image.height

    @property
    def media_type(self) -> str:
        return FORMAT_MEDIA_TYPES[self.format]


@dataclass(frozen=True)
class CheckedImage:
    """An image file known to decode within the limits, and its upright size."""

    format: str
    width: int
    height: int

    @property
    def media_type(self) -> str:
        return FORMAT_MEDIA_TYPES[self.format]


# EXIF orientations that turn the image a quarter (its upright width is its stored height).
QUARTER_TURNS = frozenset({5, 6, 7, 8})


def check_image(data: bytes, limits: ImageLimits) -> CheckedImage:
    """Decode an image file completely, keeping only its format and upright size: what the API
    needs (a truncated or corrupt file fails here, not in a worker), at a third of a full
    decode's cost for a JPEG."""
    with _opened(data, limits) as opened:
        opened.load()
        width, height = opened.size
        if opened.getexif().get(0x0112) in QUARTER_TURNS:
            width, height = height, width
        return CheckedImage(opened.format, width, height)


def decode_image(data: bytes, limits: ImageLimits) -> DecodedImage:
    """The image as a model takes it: RGB, first frame, upright."""
    with _opened(data, limits) as opened:
        return DecodedImage(_to_rgb(ImageOps.exif_transpose(opened)), opened.format)


@contextlib.contextmanager
def _opened(data: bytes, limits: ImageLimits) -> Iterator[Image.Image]:
    """The image's first frame, opened after checking its bytes and (from its header) its pixels;
    Pillow's failures on corrupt files become ImageErrors."""
    if len(data) > limits.max_bytes:
        raise too_large(len(data), limits.max_bytes)
    if not data:
        raise ImageError("The image is empty.")
    try:
        with warnings.catch_warnings():
            # Pillow warns (and above twice its own limit, raises) about huge images; our cap is checked first.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=FORMATS) as opened:
                width, height = opened.size
                if width * height > limits.max_pixels:
                    raise ImageError(f"The image is {width}x{height} pixels ({width * height:,}); the limit is "
                                     f"{limits.max_pixels:,} pixels.", code="image_too_large")
                opened.seek(0)  # the first frame of an animation
                yield opened
    except ImageError:
        raise
    except Image.DecompressionBombError:
        # Pillow's own guard, at open time, for headers claiming over twice its default limit.
        raise ImageError(f"The image has more pixels than the limit of {limits.max_pixels:,}.",
                         code="image_too_large") from None
    except UnidentifiedImageError:
        raise ImageError(f"The image could not be decoded; supported formats are {SUPPORTED}.") from None
    except (OSError, SyntaxError, ValueError, EOFError, TypeError, IndexError) as exc:
        # Pillow reports truncated and corrupt files with any of these.
        raise ImageError(f"The image could not be decoded ({exc}); supported formats are {SUPPORTED}.") from None


def _to_rgb(image: Image.Image) -> Image.Image:
    """RGB, with transparent areas on white (as transformers' image processors do it)."""
    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def too_large(size: int, limit: int) -> ImageError:
    return ImageError(f"The image is {size:,} bytes; the limit is {limit:,} bytes.", code="image_too_large")
