"""What checking an image costs a web process: data URL to verified image, per size and format.

Runs `load_request_images` in-process (as a web process does for every image before queueing:
base64 decode, a full Pillow decode in gevent's thread pool, the caps), on photo-like images
(smooth gradients with noise), and the refusal of a decompression bomb (a PNG header claiming
10 gigapixels), and a fetch of a PNG from a local HTTP server through the guarded fetcher.
Prints a table and one JSON line.

    .venv/bin/python -m bench.images [--rounds 20]
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import io
import json
import os
import statistics
import struct
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from PIL import Image, ImageFilter

from api.image_fetch import ImageFetcher
from api.image_input import load_request_images
from api.url_guard import AddressPolicy
from shared.errors import InvalidRequestError
from shared.registry import ModelRegistry
from shared.settings import DEFAULT_MODELS_FILE, Settings

SIZES = (512, 1024, 2048)


def photo_like(side: int) -> Image.Image:
    """Smooth colour gradients with some grain: compresses like a photo, not like a flat colour."""
    gradient = Image.linear_gradient("L").resize((side, side))
    noise = Image.effect_noise((side, side), 25).filter(ImageFilter.GaussianBlur(1))
    return Image.merge("RGB", (gradient, noise, gradient.rotate(90)))


def encoded(image: Image.Image, image_format: str) -> bytes:
    out = io.BytesIO()
    image.save(out, image_format, **({"quality": 85} if image_format == "JPEG" else {}))
    return out.getvalue()


def bomb() -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    header = struct.pack(">IIBBBBB", 100_000, 100_000, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def messages_with(url: str) -> list[dict]:
    return [{"role": "user", "content": [{"type": "text", "text": "What is this?"},
                                         {"type": "image_url", "image_url": {"url": url}}]}]


def timed(function, rounds: int) -> list[float]:
    samples = []
    for _ in range(rounds):
        started = time.perf_counter()
        function()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def serve(data: bytes) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    return server


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.images", description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    settings = Settings.from_env({})
    spec = dataclasses.replace(ModelRegistry.load(DEFAULT_MODELS_FILE).get("smollm2-135m-instruct"),
                               capabilities=frozenset({"chat", "vision"}))
    print(f"load average before: {os.getloadavg()[0]:.2f}; {args.rounds} rounds each, median and p90 in ms")
    results = []
    print(f"{'image':<24}{'file bytes':>12}{'median ms':>12}{'p90 ms':>10}")
    for side in SIZES:
        picture = photo_like(side)
        for image_format in ("JPEG", "PNG"):
            data = encoded(picture, image_format)
            url = f"data:image/{image_format.lower()};base64,{base64.b64encode(data).decode()}"
            samples = timed(lambda: load_request_images(messages_with(url), spec, settings), args.rounds)
            row = {"image": f"{side}x{side} {image_format}", "bytes": len(data),
                   "median_ms": round(statistics.median(samples), 2),
                   "p90_ms": round(statistics.quantiles(samples, n=10)[-1], 2)}
            results.append(row)
            print(f"{row['image']:<24}{row['bytes']:>12,}{row['median_ms']:>12.2f}{row['p90_ms']:>10.2f}")

    bomb_url = "data:image/png;base64," + base64.b64encode(bomb()).decode()

    def refuse_bomb() -> None:
        try:
            load_request_images(messages_with(bomb_url), spec, settings)
        except InvalidRequestError:
            return
        raise AssertionError("the bomb was accepted")

    samples = timed(refuse_bomb, args.rounds)
    results.append({"image": "bomb 100000x100000 PNG", "bytes": len(bomb()),
                    "median_ms": round(statistics.median(samples), 3)})
    print(f"{'bomb 100000x100000 PNG':<24}{len(bomb()):>12,}{statistics.median(samples):>12.3f}   (refused)")

    jpeg = encoded(photo_like(1024), "JPEG")
    server = serve(jpeg)
    fetcher = ImageFetcher(AddressPolicy(["127.0.0.1/32"]), max_bytes=settings.image_max_bytes,
                           timeout=settings.image_fetch_timeout, max_redirects=3)
    fetch_url = f"http://127.0.0.1:{server.server_address[1]}/photo.jpg"
    samples = timed(lambda: load_request_images(messages_with(fetch_url), spec, settings, fetcher), args.rounds)
    server.shutdown()
    results.append({"image": "1024x1024 JPEG fetched", "bytes": len(jpeg),
                    "median_ms": round(statistics.median(samples), 2)})
    print(f"{'1024x1024 JPEG fetched':<24}{len(jpeg):>12,}{statistics.median(samples):>12.2f}"
          f"{statistics.quantiles(samples, n=10)[-1]:>10.2f}")
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    print(json.dumps({"benchmark": "images", "rounds": args.rounds, "results": results}))


if __name__ == "__main__":
    main()
