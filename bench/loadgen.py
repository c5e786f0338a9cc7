"""A cheap HTTP load generator for POST /v1/chat/completions.

It shares the machine with the stack it measures, so it costs as little as it can per request:
plain asyncio (a Protocol, not streams), one keep-alive HTTP/1.1 connection per virtual client,
each client's request bytes built once, and responses parsed as they arrive, just enough to know
the status, the time to the first content token, the completion tokens and any error event.

As a script:

    .venv/bin/python -m bench.loadgen --url http://127.0.0.1:8765 -c 1 10 --duration 5 --stream

As a module: `run_load(Target, LoadSpec)` returns a `LoadResult`; `HttpConnection` is the
connection the clients use, for scripts that need to hold requests open themselves.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Optional
from urllib.parse import urlsplit

if __package__ in (None, ""):  # run as `python bench/loadgen.py`: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.report import format_ms, print_json_line, print_table

try:
    import orjson

    _loads = orjson.loads
    _dumps = orjson.dumps
except ImportError:  # the loadgen also runs outside LlamaGate's virtualenv
    _loads = json.loads

    def _dumps(obj: object) -> bytes:
        return json.dumps(obj, separators=(",", ":")).encode()

CHAT_PATH = "/v1/chat/completions"
DEFAULT_MODEL = "llamagate-benchmark"
DEFAULT_PROMPT = "Say hello."


class ProtocolError(Exception):
    """The server's response is not HTTP/1.1 as this client understands it."""


@dataclass(frozen=True)
class Target:
    host: str
    port: int
    api_key: Optional[str] = None

    @classmethod
    def from_url(cls, url: str, api_key: Optional[str] = None) -> "Target":
        parts = urlsplit(url if "://" in url else f"http://{url}")
        if parts.scheme != "http":
            raise ValueError(f"only http:// URLs are supported, got {url!r}")
        return cls(parts.hostname or "127.0.0.1", parts.port or 80, api_key)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


@dataclass(frozen=True)
class LoadSpec:
    """What each virtual client sends, how many there are, and for how long."""

    model: str = DEFAULT_MODEL
    stream: bool = False
    concurrency: int = 1
    duration: float = 10.0  # seconds; each client starts no new request after it
    requests: Optional[int] = None  # total requests over all clients; when set, wins over duration
    max_tokens: int = 16
    prompt: str = DEFAULT_PROMPT
    temperature: Optional[float] = None
    seed: Optional[int] = None  # client i sends seed + i, so clients differ but runs repeat
    include_usage: bool = True  # streams ask for the usage chunk, to count tokens exactly
    timeout: float = 120.0  # seconds one request may take, first byte to last

    def request_bytes(self, target: Target, client_index: int) -> bytes:
        """The whole HTTP request of one client, built once and sent again on every round."""
        body: dict = {"model": self.model, "messages": [{"role": "user", "content": self.prompt}],
                      "max_tokens": self.max_tokens}
        if self.stream:
            body["stream"] = True
            if self.include_usage:
                body["stream_options"] = {"include_usage": True}
        if self.temperature is not None:
            body["temperature"] = self.temperature
        if self.seed is not None:
            body["seed"] = self.seed + client_index
        payload = _dumps(body)
        accept = "text/event-stream" if self.stream else "application/json"
        auth = f"Authorization: Bearer {target.api_key}\r\n" if target.api_key else ""
        head = (f"POST {CHAT_PATH} HTTP/1.1\r\nHost: {target.host}:{target.port}\r\n"
                f"Content-Type: application/json\r\nAccept: {accept}\r\n{auth}"
                f"Content-Length: {len(payload)}\r\n\r\n")
        return head.encode("ascii") + payload


@dataclass(slots=True)
class RequestResult:
    """One request as the client saw it; times in seconds from the request's first byte sent."""

    status: int
    latency: float
    ttft: Optional[float] = None  # streams only: the first chunk with non-empty delta content
    completion_tokens: int = 0
    error: Optional[str] = None

    @property
    def ok(self) -> bool:
        return self.error is None


# States of the response parser.
_IDLE, _HEAD, _LENGTH, _CHUNK_SIZE, _CHUNK_DATA, _TRAILER, _UNTIL_CLOSE = range(7)


class HttpConnection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection; its requests run one after another.

    The response is parsed inside `data_received`, as the bytes arrive: the request's coroutine
    wakes once, when the response is complete, not once per chunk or SSE event.
    """

    def __init__(self, target: Target):
        self.target = target
        self.transport: Optional[asyncio.Transport] = None
        self._buffer = bytearray()
        self._state = _IDLE
        self._future: Optional[asyncio.Future] = None
        self._on_status: Optional[Callable[[int], None]] = None
        self._stream = False
        self._started = 0.0
        self._result = RequestResult(0, 0.0)
        self._close_after = False
        self._remaining = 0  # bytes left of the body (_LENGTH) or of the chunk (_CHUNK_DATA)
        self._body: list[bytes] = []
        self._sse = b""
        self._content_chunks = 0
        self._usage_tokens: Optional[int] = None
        self._done = False

    async def connect(self) -> None:
        # asyncio sets TCP_NODELAY on TCP sockets itself.
        await asyncio.get_running_loop().create_connection(lambda: self, self.target.host, self.target.port)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
        self.transport = None

    async def post(self, request: bytes, stream: bool, timeout: float,
                   on_status: Optional[Callable[[int], None]] = None) -> RequestResult:
        """Send one request built by `LoadSpec.request_bytes` and read its whole response.

        `on_status` is called with the status code as soon as the response head arrives.
        """
        started = time.perf_counter()
        try:
            async with asyncio.timeout(timeout):
                if self.transport is None or self.transport.is_closing():
                    await self.connect()
                self._begin(stream, on_status)
                self.transport.write(request)
                return await self._future
        except asyncio.CancelledError:
            self.close()  # a response may still be arriving: this connection cannot be reused
            raise
        except (OSError, TimeoutError, ProtocolError, ValueError) as exc:
            self.close()
            kind = "timeout" if isinstance(exc, TimeoutError) else type(exc).__name__
            return RequestResult(0, time.perf_counter() - started, error=f"{kind}: {exc}".rstrip(": "))

    def _begin(self, stream: bool, on_status: Optional[Callable[[int], None]]) -> None:
        self._future = asyncio.get_running_loop().create_future()
        self._on_status = on_status
        self._stream = stream
        self._state = _HEAD
        self._started = time.perf_counter()
        self._result = RequestResult(0, 0.0)
        self._close_after = False
        self._body = []
        self._sse = b""
        self._content_chunks = 0
        self._usage_tokens = None
        self._done = False

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Optional[Exception]) -> None:
        self.transport = None
        if self._state == _UNTIL_CLOSE:
            self._finish()
        elif self._state != _IDLE:
            self._fail(exc or ConnectionResetError("the server closed the connection mid-response"))

    def data_received(self, data: bytes) -> None:
        if self._state == _IDLE:
            return  # nothing was asked: bytes after a cancelled request
        self._buffer += data
        try:
            self._parse()
        except (ProtocolError, ValueError) as exc:
            self._fail(exc)
            self.close()

    # The response parser

    def _parse(self) -> None:
        buffer = self._buffer
        while buffer:
            state = self._state
            if state == _HEAD:
                end = buffer.find(b"\r\n\r\n")
                if end < 0:
                    return
                head = bytes(buffer[:end])
                del buffer[:end + 4]
                self._read_head(head)
            elif state == _CHUNK_SIZE:
                end = buffer.find(b"\r\n")
                if end < 0:
                    return
                size = int(bytes(buffer[:end]).split(b";", 1)[0], 16)
                del buffer[:end + 2]
                if size:
                    self._state, self._remaining = _CHUNK_DATA, size
                else:
                    self._state = _TRAILER
            elif state == _CHUNK_DATA:
                if len(buffer) < self._remaining + 2:
                    return  # LlamaGate's chunks are small: wait for the whole one
                data = bytes(buffer[:self._remaining])
                del buffer[:self._remaining + 2]
                self._state = _CHUNK_SIZE
                self._on_body(data)
            elif state == _TRAILER:
                end = buffer.find(b"\r\n")
                if end < 0:
                    return
                del buffer[:end + 2]
                if end == 0:  # the empty line after the (absent) trailer fields
                    self._finish()
            elif state == _LENGTH:
                take = min(len(buffer), self._remaining)
                data = bytes(buffer[:take])
                del buffer[:take]
                self._remaining -= take
                self._on_body(data)
                if not self._remaining:
                    self._finish()
            elif state == _UNTIL_CLOSE:
                data = bytes(buffer)
                buffer.clear()
                self._on_body(data)
            else:
                buffer.clear()  # bytes nobody asked for
                return

    def _read_head(self, head: bytes) -> None:
        if not head.startswith(b"HTTP/1."):
            raise ProtocolError(f"not an HTTP/1.x response: {head[:40]!r}")
        status = int(head[9:12])
        content_length, chunked = None, False
        close = head.startswith(b"HTTP/1.0")
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                content_length = int(value)
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif name == b"connection":
                value = value.strip().lower()
                close = value == b"close" or (close and value != b"keep-alive")
        self._result.status = status
        self._close_after = close
        if self._on_status is not None:
            self._on_status(status)
        if chunked:
            self._state = _CHUNK_SIZE
        elif content_length is not None:
            self._state, self._remaining = _LENGTH, content_length
            if not content_length:
                self._finish()
        else:
            self._state, self._close_after = _UNTIL_CLOSE, True

    def _on_body(self, data: bytes) -> None:
        if not self._stream or self._result.status != 200:
            self._body.append(data)
            return
        self._sse += data
        if b"\n\n" not in self._sse:
            return
        # LlamaGate ends every SSE event with "\n\n"; a partial event stays pending.
        *events, self._sse = self._sse.split(b"\n\n")
        result = self._result
        for event in events:
            for line in event.split(b"\n"):
                if not line.startswith(b"data:"):
                    continue  # comments (": keep-alive") and other fields
                data = line[5:].strip()
                if data == b"[DONE]":
                    self._done = True
                    continue
                chunk = _loads(data)
                if "error" in chunk:
                    error = chunk["error"] or {}
                    result.error = result.error or (f"error event: {error.get('code') or error.get('type')}: "
                                                    f"{error.get('message')}")
                    continue
                for choice in chunk.get("choices") or ():
                    if (choice.get("delta") or {}).get("content"):
                        self._content_chunks += 1
                        if result.ttft is None:
                            result.ttft = time.perf_counter() - self._started
                usage = chunk.get("usage")
                if usage:
                    self._usage_tokens = usage.get("completion_tokens")

    def _finish(self) -> None:
        latency = time.perf_counter() - self._started
        self._state = _IDLE
        if self._stream and self._result.status == 200:
            result = self._result
            result.latency = latency
            result.completion_tokens = (self._usage_tokens if self._usage_tokens is not None
                                        else self._content_chunks)
            if not self._done and result.error is None:
                result.error = "stream ended without data: [DONE]"
        else:
            result = _whole_result(self._result.status, b"".join(self._body), latency)
        self._body = []
        if self._close_after:
            self.close()
        if self._future is not None and not self._future.done():
            self._future.set_result(result)

    def _fail(self, exc: BaseException) -> None:
        self._state = _IDLE
        if self._future is not None and not self._future.done():
            self._future.set_exception(exc)


def _whole_result(status: int, body: bytes, latency: float) -> RequestResult:
    try:
        payload = _loads(body) if body else {}
    except ValueError:
        payload = {}
    if status != 200:
        error = payload.get("error") if isinstance(payload, dict) else None
        message = f"{error.get('code') or error.get('type')}: {error.get('message')}" if isinstance(error, dict) \
            else body[:120].decode("utf-8", "replace")
        return RequestResult(status, latency, error=f"HTTP {status}: {message}")
    usage = payload.get("usage") if isinstance(payload, dict) else None
    if not usage:
        return RequestResult(status, latency, error="200 without a chat.completion body")
    return RequestResult(status, latency, completion_tokens=usage.get("completion_tokens", 0))


@dataclass
class LoadResult:
    spec: LoadSpec
    results: list[RequestResult]
    wall: float  # seconds from the first request to the last response
    cpu_seconds: float  # this process's CPU time meanwhile: the load generator's own cost
    _ok: list[RequestResult] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        self._ok = [r for r in self.results if r.ok]

    @property
    def completed(self) -> int:
        return len(self._ok)

    @property
    def errors(self) -> int:
        return len(self.results) - len(self._ok)

    @property
    def rate(self) -> float:
        """Successful requests (or streams) per second."""
        return len(self._ok) / self.wall if self.wall > 0 else 0.0

    @property
    def completion_tokens(self) -> int:
        return sum(r.completion_tokens for r in self._ok)

    @property
    def tokens_per_second(self) -> float:
        return self.completion_tokens / self.wall if self.wall > 0 else 0.0

    def latency(self, q: float) -> Optional[float]:
        return percentile(sorted(r.latency for r in self._ok), q)

    def ttft(self, q: float) -> Optional[float]:
        return percentile(sorted(r.ttft for r in self._ok if r.ttft is not None), q)

    def error_counts(self) -> Counter:
        return Counter(r.error for r in self.results if r.error is not None)

    def summary(self) -> dict:
        """A JSON-ready digest; times in milliseconds."""
        ms = to_ms
        return {
            "mode": "stream" if self.spec.stream else "non-stream", "concurrency": self.spec.concurrency,
            "max_tokens": self.spec.max_tokens, "requests": len(self.results), "ok": self.completed,
            "errors": self.errors, "wall_s": round(self.wall, 3), "rate_per_s": round(self.rate, 2),
            "latency_ms": {"p50": ms(self.latency(0.5)), "p90": ms(self.latency(0.9)),
                           "p99": ms(self.latency(0.99))},
            "ttft_ms": ({"p50": ms(self.ttft(0.5)), "p90": ms(self.ttft(0.9)), "p99": ms(self.ttft(0.99))}
                        if self.spec.stream else None),
            "completion_tokens": self.completion_tokens, "tokens_per_s": round(self.tokens_per_second, 2),
            "loadgen_cpu_pct": round(100 * self.cpu_seconds / self.wall, 1) if self.wall > 0 else None,
            "error_samples": dict(self.error_counts().most_common(3)),
        }


def to_ms(seconds: Optional[float]) -> Optional[float]:
    return None if seconds is None else round(seconds * 1000, 3)


def percentile(values: list[float], q: float) -> Optional[float]:
    """The q-quantile (0..1) of sorted `values`, interpolating between neighbours."""
    if not values:
        return None
    k = (len(values) - 1) * q
    low = int(k)
    high = min(low + 1, len(values) - 1)
    return values[low] + (values[high] - values[low]) * (k - low)


async def run_load(target: Target, spec: LoadSpec) -> LoadResult:
    """Run `spec.concurrency` clients, each sending its request again as soon as the last ended."""
    connections = [HttpConnection(target) for _ in range(spec.concurrency)]
    requests = [spec.request_bytes(target, i) for i in range(spec.concurrency)]
    results: list[RequestResult] = []
    budget = [spec.requests] if spec.requests is not None else None
    try:
        # Connect everyone before the clock starts: the measurement is of requests, not handshakes.
        await asyncio.gather(*(c.connect() for c in connections))
        cpu_started, started = time.process_time(), time.perf_counter()
        deadline = started + spec.duration

        async def client(index: int) -> None:
            connection, request = connections[index], requests[index]
            while True:
                if budget is not None:
                    if budget[0] <= 0:
                        return
                    budget[0] -= 1
                elif time.perf_counter() >= deadline:
                    return
                results.append(await connection.post(request, spec.stream, spec.timeout))

        await asyncio.gather(*(client(i) for i in range(spec.concurrency)))
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    finally:
        for connection in connections:
            connection.close()
    return LoadResult(spec, results, wall, cpu)


def run(target: Target, spec: LoadSpec) -> LoadResult:
    """`run_load` from synchronous code."""
    return asyncio.run(run_load(target, spec))


RESULT_COLUMNS = ("mode", "c", "requests", "errors", "rate/s", "p50 ms", "p90 ms", "p99 ms",
                  "TTFT p50", "TTFT p99", "tokens/s", "loadgen CPU")


def result_row(result: LoadResult) -> list[str]:
    """One row of RESULT_COLUMNS."""
    stream = result.spec.stream
    return ["stream" if stream else "non-stream", str(result.spec.concurrency), str(len(result.results)),
            str(result.errors), f"{result.rate:.1f}", format_ms(result.latency(0.5)),
            format_ms(result.latency(0.9)), format_ms(result.latency(0.99)),
            format_ms(result.ttft(0.5)) if stream else "-", format_ms(result.ttft(0.99)) if stream else "-",
            f"{result.tokens_per_second:.0f}", f"{100 * result.cpu_seconds / result.wall:.0f}%"]


def print_errors(result: LoadResult, file=sys.stdout) -> None:
    for message, count in result.error_counts().most_common(5):
        print(f"  {count} x {message}", file=file)


def add_load_arguments(parser: argparse.ArgumentParser) -> None:
    """The request-shape flags shared by the scripts that use this generator."""
    parser.add_argument("--model", default=DEFAULT_MODEL, help="model to ask for (default: %(default)s)")
    parser.add_argument("--max-tokens", type=int, default=16, help="max_tokens per request (default: %(default)s)")
    parser.add_argument("--prompt", default=DEFAULT_PROMPT, help="the user message (default: %(default)r)")
    parser.add_argument("--temperature", type=float, default=None, help="temperature (default: the server's)")
    parser.add_argument("--seed", type=int, default=None, help="client i sends seed+i (default: no seed)")
    parser.add_argument("--timeout", type=float, default=120.0,
                        help="seconds one request may take (default: %(default)s)")


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.loadgen",
        description="Load POST /v1/chat/completions of a running LlamaGate with N keep-alive clients.")
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="base URL (default: %(default)s)")
    parser.add_argument("--api-key", default=os.environ.get("OPENAI_API_KEY"),
                        help="an llg_sk_ key (default: $OPENAI_API_KEY)")
    parser.add_argument("-c", "--concurrency", type=int, nargs="+", default=[1],
                        help="virtual clients; several values run one point each (default: 1)")
    parser.add_argument("--duration", type=float, default=10.0,
                        help="seconds per point (default: %(default)s)")
    parser.add_argument("--requests", type=int, default=None,
                        help="total requests per point instead of a duration")
    parser.add_argument("--stream", action="store_true", help="streaming requests (SSE)")
    parser.add_argument("--warmup", type=float, default=0.0,
                        help="seconds of unmeasured load before the first point (default: 0)")
    add_load_arguments(parser)
    args = parser.parse_args(argv)

    target = Target.from_url(args.url, args.api_key)
    base = LoadSpec(model=args.model, stream=args.stream, max_tokens=args.max_tokens, prompt=args.prompt,
                    temperature=args.temperature, seed=args.seed, timeout=args.timeout,
                    duration=args.duration, requests=args.requests)
    if args.warmup > 0:
        run(target, replace(base, concurrency=max(args.concurrency), duration=args.warmup, requests=None))
    results = [run(target, replace(base, concurrency=c)) for c in args.concurrency]

    print_table(RESULT_COLUMNS, [result_row(r) for r in results])
    for result in results:
        print_errors(result)
    print_json_line({"benchmark": "loadgen", "url": target.url, "model": args.model,
                     "points": [r.summary() for r in results]})
    return 1 if any(r.errors for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
