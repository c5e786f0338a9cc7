"""Fetching an image named by an http(s) URL, for the web process, safely.

Only http and https; only public addresses (see `api.url_guard`), on every redirect hop; at most
`max_redirects` redirects; a deadline for the whole fetch; a byte cap checked against
Content-Length and again while reading; and a Content-Type that names an image format we decode.
The worker never sees the URL: the bytes fetched here travel with the job.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Optional
from urllib.parse import urljoin, urlsplit

import gevent
import httpcore

from api.url_guard import AddressPolicy, GuardedBackend, RefusedAddress
from shared.images import FORMAT_MEDIA_TYPES, MEDIA_TYPES, SUPPORTED, ImageError, too_large

REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
USER_AGENT = b"LlamaGate-image-fetch/1.0"
ACCEPT = ", ".join(FORMAT_MEDIA_TYPES.values()).encode()
DEFAULT_PORTS = {"http": 80, "https": 443}
READ_CHUNK = 64 * 1024


class FetchError(ImageError):
    """The URL could not be fetched as an image; the message is safe to show to the client."""

    def __init__(self, message: str, code: str = "invalid_image_url"):
        super().__init__(message, code)


@dataclass(frozen=True)
class FetchedImage:
    data: bytes
    media_type: str  # as the server declared it
    url: str  # where it was finally found, after redirects


class ImageFetcher:
    def __init__(self, policy: AddressPolicy, max_bytes: int, timeout: float, max_redirects: int):
        self.policy = policy
        self.max_bytes = max_bytes
        self.timeout = timeout
        self.max_redirects = max_redirects

    @classmethod
    def from_settings(cls, settings) -> "ImageFetcher":
        return cls(AddressPolicy(settings.image_fetch_allowed_networks, settings.image_fetch_allowed_hosts),
                   max_bytes=settings.image_max_bytes, timeout=settings.image_fetch_timeout,
                   max_redirects=settings.image_fetch_max_redirects)

    def fetch(self, url: str) -> FetchedImage:
        """GET `url` and follow its redirects; raises FetchError with a message for the client."""
        deadline = time.monotonic() + self.timeout
        # The per-operation timeouts below bound each socket wait; this bounds the whole fetch,
        # DNS included, wherever gevent runs the request (the web process always does).
        with gevent.Timeout(self.timeout, FetchError(self._timeout_message())):
            with httpcore.ConnectionPool(network_backend=GuardedBackend(self.policy), retries=0,
                                         max_connections=1) as pool:
                current = url
                for _hop in range(self.max_redirects + 1):
                    location = self._get(pool, current, deadline)
                    if isinstance(location, FetchedImage):
                        return location
                    current = location
        raise FetchError(f"Too many redirects fetching the image (the limit is {self.max_redirects}).")

    def _get(self, pool: httpcore.ConnectionPool, url: str, deadline: float) -> "FetchedImage | str":
        """One hop: the image, or the URL a redirect points to."""
        target, host_header = self._check_url(url)
        remaining = self._remaining(deadline)
        timeouts = {"connect": remaining, "read": remaining, "write": remaining, "pool": remaining}
        headers = [(b"Host", host_header), (b"User-Agent", USER_AGENT), (b"Accept", ACCEPT),
                   (b"Accept-Encoding", b"identity")]
        try:
            with pool.stream("GET", target, headers=headers, extensions={"timeout": timeouts}) as response:
                if response.status in REDIRECT_STATUSES:
                    location = _header(response.headers, b"location")
                    if not location:
                        raise FetchError(f"The image URL redirected (HTTP {response.status}) without a Location.")
                    return urljoin(url, location)
                if response.status != 200:
                    raise FetchError(f"Fetching the image failed: the server answered HTTP {response.status}.")
                media_type = (_header(response.headers, b"content-type") or "").split(";", 1)[0].strip().lower()
                if media_type not in MEDIA_TYPES:
                    raise FetchError(f"The image URL returned content of type {media_type or 'unknown'!r}; "
                                     f"expected a {SUPPORTED} image.", code="invalid_image_format")
                declared = _header(response.headers, b"content-length")
                if declared and declared.isdigit() and int(declared) > self.max_bytes:
                    raise self._too_large(int(declared))
                return FetchedImage(self._read(response, deadline), media_type, url)
        except RefusedAddress as exc:
            raise FetchError(f"The image URL is not allowed: {exc}.") from None
        except httpcore.TimeoutException:
            raise FetchError(self._timeout_message()) from None
        except (httpcore.NetworkError, httpcore.ProtocolError, httpcore.UnsupportedProtocol, OSError) as exc:
            raise FetchError(f"Fetching the image failed: {type(exc).__name__}: {exc}"[:300]) from None

    def _check_url(self, url: str) -> tuple[str, bytes]:
        """The URL to request and its Host header; refuses other schemes, odd hosts and credentials."""
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise FetchError(f"The image URL is malformed: {exc}.") from None
        scheme = parts.scheme.lower()
        if scheme not in DEFAULT_PORTS:
            raise FetchError(f"Image URLs must use http or https (or be a base64 data URL), not {scheme!r}.")
        host = parts.hostname
        if not host:
            raise FetchError("The image URL has no host.")
        if parts.username or parts.password:
            raise FetchError("Image URLs must not carry credentials.")
        try:
            ascii_host = host.encode("idna").decode("ascii") if not host.isascii() else host
        except UnicodeError:
            raise FetchError(f"The image URL's host {host!r} is not a valid name.") from None
        try:
            self.policy.check_host(ascii_host)
        except RefusedAddress as exc:
            raise FetchError(f"The image URL is not allowed: {exc}.") from None
        port = port or DEFAULT_PORTS[scheme]
        netloc = f"[{ascii_host}]" if ":" in ascii_host else ascii_host
        if port != DEFAULT_PORTS[scheme]:
            netloc = f"{netloc}:{port}"
        target = f"{scheme}://{netloc}{parts.path or '/'}" + (f"?{parts.query}" if parts.query else "")
        return target, netloc.encode("ascii")

    def _read(self, response: httpcore.Response, deadline: float) -> bytes:
        body = bytearray()
        for chunk in response.iter_stream():
            body += chunk
            if len(body) > self.max_bytes:
                raise self._too_large(len(body))
            self._remaining(deadline)
        return bytes(body)

    def _remaining(self, deadline: float) -> float:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise FetchError(self._timeout_message())
        return remaining

    def _too_large(self, size: int) -> FetchError:
        return FetchError(str(too_large(size, self.max_bytes)), code="image_too_large")

    def _timeout_message(self) -> str:
        return f"Timed out fetching the image (the limit is {self.timeout:g} s)."


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> Optional[str]:
    for key, value in headers:
        if key.lower() == name:
            return value.decode("latin-1").strip()
    return None
