"""Serving a chat completion: admission, dispatch to a worker, and the response (whole or streamed).

Everything that can be refused is refused before the job is queued: unknown model, no live
worker, a prompt that does not fit the context, an image that cannot be used (images are fetched
and checked here, and travel inside the job). Once queued, a ChatCompletionRun owns the job
until it ends, and cancels it if the client leaves first.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, Iterator, Optional, Sequence

import gevent
import jinja2
import redis

from api import metrics
from api.accounts.credits import Usage
from api.choice_reader import CONTENT, REASONING, TOOL_CALL, ChoiceReader
from api.image_input import RequestImage, forget_job_images, job_images, load_request_images
from api.metering import MeteredRequest, usage_from
from api.completion_format import (SSE_DONE, SSE_KEEPALIVE, ChunkWriter, assistant_message, chat_completion,
                                   sse_data)
from api.job_stream import ClientDisconnected, JobStream
from api.output_plan import OutputPlan, plan_output
from api.runtime import Runtime
from api.schemas.chat import ChatCompletionRequest
from broker.cancellation import request_cancel
from broker.contracts import EventKind, GenerationJob, SamplingParams
from broker.naming import chat_actor, chat_queue
from broker.rabbitmq import EnqueueError, build_job_message
from shared.errors import (ContextLengthExceededError, InvalidRequestError, LlamaGateError,
                           ModelNotFoundError, ModelUnavailableError, ServerError, ServiceUnavailableError)
from shared.image_tokens import UnsupportedVisionModel
from shared.registry import ModelSpec

log = logging.getLogger(__name__)

WORKER_POLL_INTERVAL = 0.1  # seconds between looks at the directory while waiting for a worker
IMAGE_TTL_GRACE = 60.0  # seconds a large image outlives its job's deadline in Redis


def start_chat_completion(runtime: Runtime, request: ChatCompletionRequest, request_id: str,
                          client_gone: Callable[[], bool],
                          meter_for: Optional[Callable[[ModelSpec], MeteredRequest]] = None) -> "ChatCompletionRun":
    """Admit and enqueue a request; raises a LlamaGateError for anything that cannot be served.

    `meter_for` makes the request's MeteredRequest once the model is known; None serves it free
    (the homepage demo)."""
    received_at = time.monotonic()
    settings = runtime.settings
    spec = runtime.registry.get(request.model)
    if spec is None:
        raise ModelNotFoundError(request.model)
    if not spec.supports("chat"):
        raise InvalidRequestError(f"The model `{spec.id}` does not support chat completions.", param="model")
    if request.n > settings.max_choices:
        raise InvalidRequestError(f"Invalid 'n': at most {settings.max_choices} choices per request.", param="n")
    plan = plan_output(request, spec)
    meter = meter_for(spec) if meter_for else None
    # A key over its limits gets its 429 before this server fetches anything for it.
    image_input = load_request_images(request.messages, spec, settings, runtime.image_fetcher,
                                      before_fetching=meter.precheck if meter else None)
    prompt_tokens = count_prompt_tokens(runtime, spec, image_input.messages, plan.tools, image_input.images)
    max_tokens = resolve_max_tokens(spec, prompt_tokens, request.max_tokens, settings.default_max_tokens)
    await_live_worker(runtime, spec.id)  # after the checks that cannot pass by waiting
    if not runtime.router.wait_subscribed(1.0):
        raise ServiceUnavailableError("The token stream is unavailable (Redis); please retry.")
    if meter:
        meter.admit(prompt_tokens, request.n * max_tokens,
                     lifetime=settings.queue_timeout + settings.generation_timeout)

    try:
        images = job_images(image_input.images, request_id, runtime.redis, settings.image_inline_max_bytes,
                            ttl=settings.queue_timeout + settings.generation_timeout + IMAGE_TTL_GRACE)
    except redis.RedisError:
        if meter:
            meter.settle(None, "redis_unavailable")
        raise ServiceUnavailableError("The image store (Redis) is unavailable; please retry.") from None
    now = time.time()
    job = GenerationJob(
        request_id=request_id, model=spec.id, messages=image_input.messages, images=images,
        sampling=SamplingParams(temperature=request.temperature, top_p=request.top_p, max_tokens=max_tokens,
                                stop=request.stop, seed=request.seed,
                                presence_penalty=request.presence_penalty,
                                frequency_penalty=request.frequency_penalty),
        reply_to=runtime.router.channel, n=request.n, enqueued_at=now,
        tools=plan.tools, grammar=plan.grammar, grammar_after=plan.grammar_after,
        start_by=now + settings.queue_timeout,
        deadline=now + settings.queue_timeout + settings.generation_timeout)
    events = runtime.router.register(request_id)  # subscribed before the job can produce anything
    message = build_job_message(chat_queue(spec.id), chat_actor(spec.id), job.to_payload(),
                                max_age_ms=int(settings.queue_timeout * 1000))
    try:
        runtime.publisher.enqueue(message)
    except EnqueueError as exc:
        runtime.router.unregister(request_id)
        forget_job_images(images, runtime.redis)
        if meter:
            meter.settle(None, "enqueue_failed")
        log.error("enqueue failed", extra={"error": str(exc)})
        try:
            # RabbitMQ may still take the job after the timeout: no worker should run it then.
            request_cancel(runtime.redis, request_id)
        except redis.RedisError:
            pass
        raise ServiceUnavailableError("The job queue is unavailable; please retry.") from None
    stream = JobStream(job, events, runtime.directory, tick=min(1.0, settings.keepalive_interval),
                       worker_wait_timeout=settings.worker_wait_timeout, client_gone=client_gone)
    return ChatCompletionRun(runtime, request, job, stream, received_at, meter, plan)


def await_live_worker(runtime: Runtime, model_id: str) -> None:
    """Wait (boundedly) until a live worker serves `model_id`; 503 if none shows up in time."""
    deadline = time.monotonic() + runtime.settings.worker_wait_timeout
    while True:
        if runtime.directory.fresh and runtime.directory.workers_for(model_id):
            return
        if time.monotonic() >= deadline:
            raise ModelUnavailableError(f"No worker is serving the model `{model_id}` right now; "
                                        "please retry later.")
        gevent.sleep(WORKER_POLL_INTERVAL)


def count_prompt_tokens(runtime: Runtime, spec: ModelSpec, messages: Sequence[dict[str, Any]],
                        tools: tuple[dict, ...] = (), images: Sequence[RequestImage] = ()) -> int:
    """The prompt's tokens as the worker will count them: the rendered chat template, each image's
    placeholder expanded to the image's tokens by the model's image-token rule."""
    tokenizer = runtime.tokenizer(spec)
    content_parts = spec.supports("vision")  # vision templates take every message as content parts
    try:
        if not images:
            return len(tokenizer.prompt_ids(messages, tools, content_parts))
        rendered = tokenizer.render(messages, tools, content_parts)
    except jinja2.TemplateError as exc:
        # Chat templates reject some conversations (e.g. roles that do not alternate).
        raise InvalidRequestError(f"The model's chat template rejected these messages: {exc}",
                                  param="messages") from None
    try:
        rule = runtime.image_token_rule(spec)
    except (OSError, UnsupportedVisionModel) as exc:
        log.error("no image-token rule for a vision model", extra={"model": spec.id, "error": repr(exc)})
        raise ServerError(f"The model `{spec.id}` cannot take images on this server right now.") from None
    for image in images:
        try:
            rule.feature_tokens(image.width, image.height, image.detail)
        except ValueError as exc:  # a size this model's encoder cannot take (Qwen2.5-VL: under 28 px)
            raise InvalidRequestError(f"Invalid image: {exc}.", param=image.param,
                                      code="invalid_image_format") from None
    try:
        expanded = rule.expand(rendered, [(image.width, image.height, image.detail) for image in images])
    except ValueError as exc:
        raise InvalidRequestError(f"The model's chat template cannot place these images: {exc}.",
                                  param="messages") from None
    return len(tokenizer.encode(expanded))


def resolve_max_tokens(spec: ModelSpec, prompt_tokens: int, requested: Optional[int], default: int) -> int:
    """The completion budget: as requested if it fits the context, else a default bounded by it."""
    room = spec.context_length - prompt_tokens
    if room < 1 or (requested is not None and requested > room):
        wanted = prompt_tokens + (requested or 1)
        raise ContextLengthExceededError(
            f"This model's maximum context length is {spec.context_length} tokens. However, you requested "
            f"{wanted} tokens ({prompt_tokens} in the messages, {requested or 1} in the completion). "
            "Please reduce the length of the messages or completion.", param="messages")
    return requested if requested is not None else min(default, room)


class ChatCompletionRun:
    """One enqueued chat completion, from its job's first event to its end."""

    def __init__(self, runtime: Runtime, request: ChatCompletionRequest, job: GenerationJob,
                 stream: JobStream, received_at: float, meter: Optional[MeteredRequest] = None,
                 plan: OutputPlan = OutputPlan()):
        self.runtime = runtime
        self.plan = plan
        self.meter = meter
        self.request = request
        self.job = job
        self.stream = stream
        self.received_at = received_at
        self.created = int(time.time())
        self.outcome = "ok"
        self._first_text_at: Optional[float] = None
        self._closed = False

    def wait_started(self) -> None:
        """Block until a worker has admitted the job (so queueing errors still get a real status)."""
        try:
            for event in self.stream.events():
                if event is not None and event.kind == EventKind.STARTED:
                    return
        except BaseException as exc:
            self._record_failure(exc)
            self.close()
            raise

    def result(self) -> dict:
        """The whole `chat.completion` object, once the job is done."""
        n = self.request.n
        readers = [ChoiceReader(self.plan) for _ in range(n)]
        pieces: list[list] = [[] for _ in range(n)]
        finish_reasons: list[Optional[str]] = [None] * n
        try:
            for event in self.stream.events():
                if event is None:
                    continue
                if event.kind == EventKind.DELTA:
                    self._saw_text()
                    pieces[event.index] += readers[event.index].feed(event.text)
                elif event.kind == EventKind.FINISH:
                    pieces[event.index] += readers[event.index].finish()
                    finish_reasons[event.index] = readers[event.index].finish_reason(event.finish_reason)
        except BaseException as exc:
            self._record_failure(exc)
            raise
        finally:
            self.close()
        messages = [self._message(choice_pieces) for choice_pieces in pieces]
        return chat_completion(self.job.request_id, self.created, self.job.model, [], finish_reasons,
                               self.stream.usage or {}, messages=messages)

    def _message(self, pieces: list) -> dict:
        content = "".join(p.text for p in pieces if p.kind == CONTENT)
        reasoning = "".join(p.text for p in pieces if p.kind == REASONING) if self.plan.reasoning else None
        calls = [p.tool_call.to_dict() for p in pieces if p.kind == TOOL_CALL]
        return assistant_message(content, calls, reasoning)

    def sse(self) -> Iterator[bytes]:
        """The response as server-sent events; errors after the first byte become an error event."""
        writer = ChunkWriter(self.job.request_id, self.created, self.job.model, self.request.include_usage)
        keepalive = self.runtime.settings.keepalive_interval
        metrics.OPEN_STREAMS.inc()
        try:
            last_write = time.monotonic()
            yield b"".join(writer.role(index) for index in range(self.request.n))
            readers = [ChoiceReader(self.plan) for _ in range(self.request.n)]
            pending: list[bytes] = []
            for event in self.stream.events():
                if event is None:
                    if time.monotonic() - last_write >= keepalive:
                        last_write = time.monotonic()
                        yield SSE_KEEPALIVE  # keeps proxies from closing, and reveals a gone client
                    continue
                if event.kind == EventKind.DELTA:
                    self._saw_text()
                    pending += self._chunks(writer, readers[event.index], event.index,
                                            readers[event.index].feed(event.text))
                elif event.kind == EventKind.FINISH:
                    reader = readers[event.index]
                    pending += self._chunks(writer, reader, event.index, reader.finish())
                    pending.append(writer.finish(event.index, reader.finish_reason(event.finish_reason) or "stop"))
                elif event.kind == EventKind.DONE and self.request.include_usage:
                    pending.append(writer.usage(event.usage or {}))
                # Chunks that arrived together leave in one write (one syscall, one TCP segment).
                if pending and not self.stream.has_buffered():
                    last_write = time.monotonic()
                    yield b"".join(pending)
                    pending.clear()
            yield b"".join(pending) + SSE_DONE
        except ClientDisconnected:
            self._record_failure(ClientDisconnected())
        except LlamaGateError as exc:
            self._record_failure(exc)
            yield sse_data(exc.to_dict())
            yield SSE_DONE
        except GeneratorExit:
            # gunicorn closes the response iterator when a write to the client fails.
            self._record_failure(ClientDisconnected())
            raise
        finally:
            metrics.OPEN_STREAMS.dec()
            self.close()

    @staticmethod
    def _chunks(writer: ChunkWriter, reader: ChoiceReader, index: int, pieces: list) -> list[bytes]:
        chunks = []
        for piece in pieces:
            if piece.kind == CONTENT:
                chunks.append(writer.content(index, piece.text))
            elif piece.kind == REASONING:
                chunks.append(writer.reasoning(index, piece.text))
            else:
                call = piece.tool_call
                chunks.append(writer.tool_call(index, reader.tool_calls.index(call), call.id, call.name,
                                               call.arguments))
        return chunks

    def close(self) -> None:
        """Release the request's subscription; cancel the job if it has not ended. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self.runtime.router.unregister(self.job.request_id)
        forget_job_images(self.job.images, self.runtime.redis)
        if not self.stream.finished:
            try:
                request_cancel(self.runtime.redis, self.job.request_id)
            except redis.RedisError:
                log.warning("could not send the cancel; the job ends at its deadline")
        self._record_end()
        self._settle()

    def _settle(self) -> None:
        """Charge what was generated: the worker's usage if the job finished, its report after the
        cancel if the client left, nothing if the job failed."""
        if self.meter is None:
            return
        if self.stream.finished and self.stream.usage is not None:
            self.meter.settle(usage_from(self.stream.usage), self.outcome)
        elif self.outcome == "client_disconnected":
            self.meter.release()  # its slot frees now; the charge waits for the worker's count
            seen = self.stream.completion_tokens_seen
            self.meter.settle_after_cancel(Usage(self.meter.prompt_tokens if seen else 0, seen))
        else:
            self.meter.settle(None, self.outcome)

    def _saw_text(self) -> None:
        if self._first_text_at is None:
            self._first_text_at = time.monotonic()
            metrics.TIME_TO_FIRST_TOKEN.labels(self.job.model).observe(self._first_text_at - self.received_at)

    def _record_failure(self, exc: BaseException) -> None:
        if isinstance(exc, ClientDisconnected):
            self.outcome = "client_disconnected"
        elif isinstance(exc, LlamaGateError):
            self.outcome = exc.code or exc.type
        else:
            self.outcome = type(exc).__name__

    def _record_end(self) -> None:
        usage = self.stream.usage or {}
        if usage:
            metrics.PROMPT_TOKENS.labels(self.job.model).inc(usage.get("prompt_tokens", 0))
            metrics.COMPLETION_TOKENS.labels(self.job.model).inc(usage.get("completion_tokens", 0))
        log.info("chat completion ended", extra={
            "model": self.job.model, "stream": self.request.stream, "outcome": self.outcome,
            "worker_id": self.stream.worker_id, "usage": usage,
            "seconds": round(time.monotonic() - self.received_at, 4),
            "ttft_s": round(self._first_text_at - self.received_at, 4) if self._first_text_at else None})
