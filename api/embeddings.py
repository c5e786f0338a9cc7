"""Serving an embeddings request: validation, admission, dispatch to an embeddings worker, the result.

Everything that can be refused is refused before the job is queued: unknown model, a model that
does not embed, `dimensions` it cannot honour, an input too long for it, no live worker. The
inputs are tokenized here, so the usage counted before the job is queued is the usage the worker
reports back. The worker answers with one event carrying every vector, through the same
per-process Redis channel as chat completions.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable, Optional

import redis

from api import metrics
from api.accounts.credits import Usage
from api.chat_completions import await_live_worker
from api.job_stream import ClientDisconnected, JobStream
from api.metering import MeteredRequest
from api.runtime import Runtime
from api.schemas.embeddings import EmbeddingsRequest
from broker.cancellation import request_cancel
from broker.contracts import ContractError, EmbeddingJob, EventKind, decode_vectors
from broker.naming import embeddings_actor, embeddings_queue
from broker.rabbitmq import EnqueueError, build_job_message
from shared.errors import (ContextLengthExceededError, InvalidRequestError, LlamaGateError, ModelNotFoundError,
                           ServerError, ServiceUnavailableError)
from shared.registry import ModelSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EmbeddingsAdmission:
    """A request that passed every check that does not need a worker, with its usage known."""

    spec: ModelSpec
    inputs: list[list[int]]  # token ids of each input
    dimensions: int | None

    @property
    def prompt_tokens(self) -> int:
        return sum(len(ids) for ids in self.inputs)


@dataclass(frozen=True)
class EmbeddingsResult:
    model: str
    vectors: list[bytes]  # one per input, in input order: little-endian float32
    usage: dict[str, int]


def create_embeddings(runtime: Runtime, request: EmbeddingsRequest, request_id: str,
                      client_gone: Callable[[], bool],
                      meter_for: Optional[Callable[[ModelSpec], MeteredRequest]] = None) -> EmbeddingsResult:
    """Validate, admit, enqueue and wait; raises a LlamaGateError for anything that cannot be served.

    `meter_for` makes the request's MeteredRequest (rate limits and credits) once the model is known."""
    admission = admit_embeddings(runtime, request)
    meter = meter_for(admission.spec) if meter_for else None
    return run_embeddings(runtime, admission, request_id, client_gone, meter)


def admit_embeddings(runtime: Runtime, request: EmbeddingsRequest) -> EmbeddingsAdmission:
    """The checks that need no worker, and the request's tokens (its usage)."""
    spec = runtime.registry.get(request.model)
    if spec is None:
        raise ModelNotFoundError(request.model)
    if not spec.supports("embeddings") or spec.embedding is None:
        raise InvalidRequestError(f"The model `{spec.id}` does not support embeddings; "
                                  "use an embedding model with /v1/embeddings.", param="model")
    dimensions = request.dimensions
    if dimensions is not None and dimensions != spec.embedding.dimensions:
        if not spec.embedding.shortenable:
            raise InvalidRequestError(
                f"The model `{spec.id}` does not support 'dimensions': its embeddings always have "
                f"{spec.embedding.dimensions} dimensions.", param="dimensions")
        if dimensions > spec.embedding.dimensions:
            raise InvalidRequestError(f"Invalid 'dimensions': the model `{spec.id}` makes embeddings of at "
                                      f"most {spec.embedding.dimensions} dimensions.", param="dimensions")
    return EmbeddingsAdmission(spec, tokenize_inputs(runtime, spec, request), dimensions)


def tokenize_inputs(runtime: Runtime, spec: ModelSpec, request: EmbeddingsRequest) -> list[list[int]]:
    """Each input's token ids; 400 for an input longer than the model takes or an unknown token id."""
    tokenizer = runtime.embedding_tokenizer(spec)
    inputs = tokenizer.encode_batch(request.texts) if request.texts is not None else request.token_ids
    limit = spec.embedding.max_input_tokens
    for index, ids in enumerate(inputs):
        if len(ids) > limit:
            where = f"input[{index}]" if request.input_count > 1 else "input"
            raise ContextLengthExceededError(
                f"Invalid '{where}': it is {len(ids)} tokens long, but the model `{spec.id}` takes at most "
                f"{limit} tokens per input (special tokens included). Please shorten the input.", param=where)
        if request.token_ids is not None and max(ids) >= tokenizer.vocab_size:
            raise InvalidRequestError(f"Invalid 'input': token id {max(ids)} is not in the vocabulary of "
                                      f"`{spec.id}` (0 to {tokenizer.vocab_size - 1}).", param="input")
    return inputs


def run_embeddings(runtime: Runtime, admission: EmbeddingsAdmission, request_id: str,
                   client_gone: Callable[[], bool], meter: Optional[MeteredRequest] = None) -> EmbeddingsResult:
    """Enqueue the job for an embeddings worker and wait for its vectors. A metered request pays for
    its input tokens if, and only if, its vectors come back."""
    received_at = time.monotonic()
    settings = runtime.settings
    model = admission.spec.id
    await_live_worker(runtime, model)
    if not runtime.router.wait_subscribed(1.0):
        raise ServiceUnavailableError("The result stream is unavailable (Redis); please retry.")
    if meter is not None:
        meter.admit(admission.prompt_tokens, 0, lifetime=settings.queue_timeout + settings.generation_timeout)
    now = time.time()
    job = EmbeddingJob(request_id=request_id, model=model, inputs=tuple(tuple(ids) for ids in admission.inputs),
                       reply_to=runtime.router.channel, dimensions=admission.dimensions, enqueued_at=now,
                       start_by=now + settings.queue_timeout,
                       deadline=now + settings.queue_timeout + settings.generation_timeout)
    events = runtime.router.register(request_id)  # subscribed before the job can produce anything
    stream = JobStream(job, events, runtime.directory, tick=min(1.0, settings.keepalive_interval),
                       worker_wait_timeout=settings.worker_wait_timeout, client_gone=client_gone)
    outcome = "ok"
    try:
        _enqueue(runtime, job)
        done = next(event for event in stream.events() if event is not None and event.kind == EventKind.DONE)
        vectors = decode_vectors(done.vectors or "", len(job.inputs))
    except ContractError:
        outcome = "bad_result"
        log.exception("an embeddings worker sent a malformed result")
        raise ServerError("The embeddings worker sent a malformed result; please retry.") from None
    except ClientDisconnected:
        outcome = "client_disconnected"
        raise
    except LlamaGateError as exc:
        outcome = exc.code or exc.type
        raise
    finally:
        runtime.router.unregister(request_id)
        if not stream.finished:
            try:
                request_cancel(runtime.redis, request_id)  # a queued job need not run for nobody
            except redis.RedisError:
                pass
        usage = stream.usage or {}
        if meter is not None:
            meter.settle(Usage(usage.get("prompt_tokens", 0), 0) if outcome == "ok" and usage else None, outcome)
        log.info("embeddings ended", extra={
            "model": model, "inputs": len(job.inputs), "outcome": outcome, "worker_id": stream.worker_id,
            "usage": usage, "seconds": round(time.monotonic() - received_at, 4)})
    metrics.PROMPT_TOKENS.labels(model).inc(usage.get("prompt_tokens", 0))
    return EmbeddingsResult(model=model, vectors=vectors, usage=usage)


def _enqueue(runtime: Runtime, job: EmbeddingJob) -> None:
    message = build_job_message(embeddings_queue(job.model), embeddings_actor(job.model), job.to_payload(),
                                max_age_ms=int(runtime.settings.queue_timeout * 1000))
    try:
        runtime.publisher.enqueue(message)
    except EnqueueError as exc:
        log.error("enqueue failed", extra={"error": str(exc)})
        raise ServiceUnavailableError("The job queue is unavailable; please retry.") from None
