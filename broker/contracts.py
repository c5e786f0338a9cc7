"""The wire contract between the API and the workers, defined once and imported by both sides.

Jobs (chat completions and embeddings) travel API -> worker through RabbitMQ (as the single
argument of a dramatiq message).
Job events travel worker -> API through Redis pub/sub, on the channel of the web process that
holds the client's connection. Both carry a version so that a rolling deploy can tell when the
other side speaks a different contract instead of misreading it.
"""

from __future__ import annotations

import base64
import sys
from array import array
from dataclasses import asdict, dataclass
from typing import Any

import orjson

# 2: jobs carry `tools`, `grammar` and `grammar_after` (structured output); a version-1 worker
# would ignore them and answer unconstrained, so it must refuse these jobs instead.
# 3: chat jobs carry `images` (and messages name them with {"type": "image"} parts); a version-2
# worker would drop the images and answer about a picture it never saw.
CONTRACT_VERSION = 3


class ContractError(ValueError):
    """A message that does not follow this contract version."""


@dataclass(frozen=True, slots=True)
class SamplingParams:
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 16
    stop: tuple[str, ...] = ()
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


@dataclass(frozen=True, slots=True)
class JobImage:
    """One image of a chat job, as the API checked it: the file's bytes inline (base64), or under a
    Redis key (large images, with a TTL) so that RabbitMQ carries only small messages. Never a URL:
    the worker must not fetch anything the API did not check."""

    media_type: str  # image/png, image/jpeg, image/webp or image/gif
    width: int  # pixels, as decoded (upright, first frame)
    height: int
    detail: str = "auto"  # OpenAI's image_url.detail: auto, low or high
    data: str | None = None  # base64 of the image file
    key: str | None = None  # Redis key holding the image file

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> "JobImage":
        image = cls(**payload)
        if (image.data is None) == (image.key is None):
            raise ContractError("an image must carry exactly one of 'data' and 'key'")
        return image


@dataclass(frozen=True, slots=True)
class GenerationJob:
    """One chat completion request, as a worker receives it."""

    request_id: str
    model: str
    messages: tuple[dict[str, Any], ...]
    sampling: SamplingParams
    reply_to: str  # the Redis channel of the web process waiting for this job's events
    n: int = 1
    enqueued_at: float = 0.0  # unix time
    start_by: float = 0.0  # unix time after which no worker should start the job: its client gave up
    deadline: float = 0.0  # unix time by which generation must have ended
    tools: tuple[dict[str, Any], ...] = ()  # OpenAI tool definitions, for the prompt
    grammar: str | None = None  # llguidance grammar the output must follow (shared/grammars.py)
    grammar_after: str | None = None  # the grammar applies only after this text (a reasoning model's
    # end-of-thinking marker), so that it constrains the answer and not the thinking
    images: tuple[JobImage, ...] = ()  # in the order of the messages' {"type": "image"} parts
    version: int = CONTRACT_VERSION

    def to_payload(self) -> dict[str, Any]:
        payload = asdict(self)
        payload["sampling"]["stop"] = list(self.sampling.stop)
        payload["messages"] = list(self.messages)
        payload["tools"] = list(self.tools)
        payload["images"] = [asdict(image) for image in self.images]
        return payload

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> "GenerationJob":
        if not isinstance(payload, dict):
            raise ContractError(f"a job must be an object, not {type(payload).__name__}")
        if payload.get("version") != CONTRACT_VERSION:
            raise ContractError(f"job contract version {payload.get('version')!r} is not {CONTRACT_VERSION}")
        try:
            sampling = dict(payload["sampling"])
            sampling["stop"] = tuple(sampling.get("stop") or ())
            return cls(**{**payload, "messages": tuple(payload["messages"]),
                          "tools": tuple(payload.get("tools") or ()),
                          "images": tuple(JobImage.from_payload(i) for i in payload.get("images") or ()),
                          "sampling": SamplingParams(**sampling)})
        except (KeyError, TypeError, AttributeError) as exc:
            raise ContractError(f"malformed job: {exc}") from exc


@dataclass(frozen=True, slots=True)
class EmbeddingJob:
    """One embeddings request, as an embeddings worker receives it.

    Inputs travel as token ids: the API tokenizes them anyway (to check their length and count
    usage), so the worker runs exactly what was counted and charged.
    """

    request_id: str
    model: str
    inputs: tuple[tuple[int, ...], ...]
    reply_to: str  # the Redis channel of the web process waiting for this job's result
    dimensions: int | None = None  # shorten the vectors to this many (models that allow it)
    enqueued_at: float = 0.0  # unix time
    start_by: float = 0.0  # unix time after which no worker should start the job: its client gave up
    deadline: float = 0.0  # unix time by which the result must have been sent
    version: int = CONTRACT_VERSION

    def to_payload(self) -> dict[str, Any]:
        payload = asdict(self)
        payload["inputs"] = [list(ids) for ids in self.inputs]
        return payload

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> "EmbeddingJob":
        if not isinstance(payload, dict):
            raise ContractError(f"a job must be an object, not {type(payload).__name__}")
        if payload.get("version") != CONTRACT_VERSION:
            raise ContractError(f"job contract version {payload.get('version')!r} is not {CONTRACT_VERSION}")
        try:
            return cls(**{**payload, "inputs": tuple(tuple(ids) for ids in payload["inputs"])})
        except (KeyError, TypeError) as exc:
            raise ContractError(f"malformed job: {exc}") from exc


def encode_vectors(raw: bytes) -> str:
    """Embedding vectors on the wire: little-endian float32, row after row, in base64."""
    return base64.b64encode(raw).decode("ascii")


def decode_vectors(data: str, rows: int) -> list[bytes]:
    """The little-endian float32 bytes of each of `rows` vectors sent with `encode_vectors`."""
    raw = base64.b64decode(data)
    if rows <= 0 or len(raw) % (4 * rows):
        raise ContractError(f"{len(raw)} bytes of vectors cannot hold {rows} float32 rows")
    width = len(raw) // rows
    return [raw[i * width:(i + 1) * width] for i in range(rows)]


def vector_floats(row: bytes) -> list[float]:
    """One little-endian float32 vector as Python floats."""
    values = array("f", row)
    if sys.byteorder == "big":
        values.byteswap()
    return values.tolist()


class EventKind:
    STARTED = "started"  # a worker admitted the job (carries worker_id)
    DELTA = "delta"  # generated text for one choice
    FINISH = "finish"  # one choice ended (carries finish_reason)
    DONE = "done"  # the whole job ended (carries usage; for embeddings, the vectors); always the last event
    ERROR = "error"  # the job failed (carries an OpenAI error body); always the last event


TERMINAL_KINDS = frozenset({EventKind.DONE, EventKind.ERROR})


@dataclass(slots=True)
class JobEvent:
    """One event of one job. `seq` counts from 0 within an attempt, with no gaps."""

    request_id: str
    kind: str
    seq: int
    attempt: int = 1
    index: int = 0
    text: str = ""
    tokens: int = 0
    finish_reason: str | None = None
    usage: dict[str, int] | None = None
    error: dict[str, Any] | None = None
    status: int | None = None
    worker_id: str | None = None
    vectors: str | None = None  # an embeddings job's result, as `encode_vectors` writes it

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {"r": self.request_id, "k": self.kind, "s": self.seq, "a": self.attempt}
        if self.index:
            wire["i"] = self.index
        if self.text:
            wire["t"] = self.text
        if self.tokens:
            wire["n"] = self.tokens
        if self.finish_reason is not None:
            wire["f"] = self.finish_reason
        if self.usage is not None:
            wire["u"] = self.usage
        if self.error is not None:
            wire["e"] = self.error
        if self.status is not None:
            wire["c"] = self.status
        if self.worker_id is not None:
            wire["w"] = self.worker_id
        if self.vectors is not None:
            wire["x"] = self.vectors
        return wire

    @classmethod
    def from_wire(cls, wire: dict[str, Any]) -> "JobEvent":
        return cls(request_id=wire["r"], kind=wire["k"], seq=wire["s"], attempt=wire.get("a", 1),
                   index=wire.get("i", 0), text=wire.get("t", ""), tokens=wire.get("n", 0),
                   finish_reason=wire.get("f"), usage=wire.get("u"), error=wire.get("e"),
                   status=wire.get("c"), worker_id=wire.get("w"), vectors=wire.get("x"))


def encode_event_batch(events: list[JobEvent]) -> bytes:
    """One pub/sub message carries every event of one generation step for one web process."""
    return orjson.dumps({"v": CONTRACT_VERSION, "events": [e.to_wire() for e in events]})


def decode_event_batch(data: bytes) -> list[JobEvent]:
    try:
        batch = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ContractError(f"undecodable event batch: {exc}") from exc
    if not isinstance(batch, dict) or batch.get("v") != CONTRACT_VERSION:
        raise ContractError(f"event batch version {batch.get('v') if isinstance(batch, dict) else None!r} "
                            f"is not {CONTRACT_VERSION}")
    try:
        return [JobEvent.from_wire(wire) for wire in batch["events"]]
    except (KeyError, TypeError) as exc:
        raise ContractError(f"malformed event: {exc}") from exc
