"""The generation loop: one thread that owns an engine and everything it runs.

dramatiq's actor threads never touch the engine; they post jobs to this loop's inbox. Each
iteration admits new jobs, enforces deadlines, runs one engine step for the whole batch, and hands
that step's events to the outbox, which publishes them without holding up the next step. What the
outbox learns from Redis (jobs whose clients have gone, or whose web process no longer listens)
comes back through the inbox, and those jobs leave the batch before the following step. The
loop's tick time tells the announcer whether it is alive.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Optional, Sequence

from broker.contracts import TERMINAL_KINDS, EventKind, GenerationJob, JobEvent
from broker.event_publisher import EventPublisher, PublishResult
from inference_worker import metrics
from inference_worker.engines.base import ChoiceOutput, Engine, EngineRequest, Prompt
from inference_worker.outbox import OutgoingBatch, Outbox
from shared.errors import (ContextLengthExceededError, InvalidRequestError, LlamaGateError, RequestTimeoutError,
                           ServerError)
from shared.images import DecodedImage
from shared.structured_logging import request_id_var

log = logging.getLogger(__name__)

IDLE_WAIT = 0.5  # seconds the loop sleeps on its inbox when it has nothing to do


@dataclass
class ActiveJob:
    job: GenerationJob
    attempt: int
    done: threading.Event
    prompt: Optional[Prompt] = None  # built by `submit`, in the caller's thread
    prompt_error: Optional[LlamaGateError] = None  # why it could not be built
    prompt_tokens: int = 0
    completion_tokens: int = 0
    next_seq: int = 0
    finished_choices: int = 0
    emitted_text: bool = False
    admitted_at: float = field(default_factory=time.monotonic)
    first_token_at: Optional[float] = None

    def event(self, kind: str, **fields) -> JobEvent:
        event = JobEvent(request_id=self.job.request_id, kind=kind, seq=self.next_seq,
                         attempt=self.attempt, **fields)
        self.next_seq += 1
        return event


class GenerationLoop:
    def __init__(self, engine: Engine, publisher: EventPublisher, worker_id: str):
        self.engine = engine
        self.worker_id = worker_id
        self.model = engine.spec.id
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._jobs: dict[str, ActiveJob] = {}
        self._started: list[JobEvent] = []  # STARTED events waiting for the next step's publish
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"generation-loop-{self.model}", daemon=True)
        self.outbox = Outbox(publisher, lambda result: self._inbox.put(("published", result)), self.model)
        self.last_tick = time.monotonic()

    # --- called from other threads -------------------------------------------------------------

    def start(self) -> None:
        self.outbox.start()
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        self._inbox.put(("wake", None))
        self._thread.join(timeout)
        self.outbox.stop(timeout)

    def submit(self, job: GenerationJob, attempt: int, images: Sequence[DecodedImage] = ()) -> threading.Event:
        """Hand a job (and its decoded images) to the loop; the returned event is set once the job
        has ended, however it ended. The prompt is built here, in the caller's (an actor's) thread:
        rendering the template and processing images never hold up the batch's next step."""
        done = threading.Event()
        active = ActiveJob(job, attempt, done)
        try:
            active.prompt = self.engine.prompt(job.messages, job.tools, images)
        except Exception as exc:  # noqa: BLE001 - a template or image error is the request's fault
            active.prompt_error = InvalidRequestError(f"Could not build the prompt: {exc}", param="messages")
        self._inbox.put(("job", active))
        return done

    def seconds_since_tick(self) -> float:
        return time.monotonic() - self.last_tick

    # --- the loop thread -------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stopping.is_set():
            self.last_tick = time.monotonic()
            self._drain_inbox(block=not self.engine.has_work)
            self._enforce_deadlines()
            if not self.engine.has_work:
                continue
            started = time.monotonic()
            try:
                outputs = self.engine.step()
            except Exception:  # noqa: BLE001 - the loop must survive any engine failure
                log.exception("engine step failed; failing the batch", extra={"model": self.model})
                self._fail_all(ServerError("The model failed while generating this response."))
                continue
            metrics.STEP_SECONDS.labels(self.model).observe(time.monotonic() - started)
            metrics.BATCH_SIZE.labels(self.model).set(self.engine.running)
            metrics.QUEUED_IN_ENGINE.labels(self.model).set(self.engine.queued)
            self._publish(self._events_for(outputs))
        self._fail_all(RequestTimeoutError("The worker is shutting down."))

    def _drain_inbox(self, block: bool) -> None:
        started_events: list[JobEvent] = []
        try:
            item = self._inbox.get(timeout=IDLE_WAIT) if block else self._inbox.get_nowait()
            while True:
                kind, value = item
                if kind == "job":
                    event = self._admit(value)
                    if event is not None:
                        started_events.append(event)
                elif kind == "published":
                    self._apply_publish_result(value)
                item = self._inbox.get_nowait()
        except queue.Empty:
            pass
        # STARTED events wait for the coming step's events: one round trip instead of two on
        # the way to a job's first token. With no step coming, they go now.
        self._started.extend(started_events)
        if self._started and not self.engine.has_work:
            self._publish([])

    def _admit(self, active: ActiveJob) -> Optional[JobEvent]:
        job = active.job
        token = request_id_var.set(job.request_id)
        try:
            if job.request_id in self._jobs:
                log.warning("duplicate delivery of a running job ignored")
                active.done.set()
                return None
            self._jobs[job.request_id] = active
            if active.prompt_error is not None:
                self._finish_with_error(active, active.prompt_error)
                return None
            prompt, active.prompt = active.prompt, None  # the engine request holds what it needs of it
            prompt_ids = prompt.ids
            active.prompt_tokens = len(prompt_ids)
            if job.n > self.engine.max_sequences:
                # Could never be admitted, and would block every job queued behind it.
                self._finish_with_error(active, InvalidRequestError(
                    f"Invalid 'n': this model generates at most {self.engine.max_sequences} choices at once.",
                    param="n"))
                return None
            needed = len(prompt_ids) + job.sampling.max_tokens
            if needed > self.engine.spec.context_length:
                self._finish_with_error(active, ContextLengthExceededError(
                    f"This model's maximum context length is {self.engine.spec.context_length} tokens. "
                    f"However, you requested {needed} tokens ({len(prompt_ids)} in the messages, "
                    f"{job.sampling.max_tokens} in the completion).", param="messages"))
                return None
            try:
                self.engine.add(EngineRequest(job.request_id, prompt_ids, job.sampling, job.n,
                                              grammar=job.grammar, grammar_after=job.grammar_after,
                                              model_inputs=prompt.model_inputs))
            except LlamaGateError as exc:  # a request this engine can never run (too big for its cache)
                self._finish_with_error(active, exc)
                return None
            except ValueError as exc:  # a grammar this engine cannot enforce: never run unconstrained
                self._finish_with_error(active, InvalidRequestError(str(exc), param="response_format"))
                return None
            log.info("job admitted", extra={"model": self.model, "prompt_tokens": len(prompt_ids),
                                            "images": len(job.images),
                                            "attempt": active.attempt, "queued_for_s":
                                            round(max(0.0, time.time() - job.enqueued_at), 4)})
            return active.event(EventKind.STARTED, worker_id=self.worker_id)
        finally:
            request_id_var.reset(token)

    def _cancel(self, request_id: str) -> None:
        active = self._jobs.get(request_id)
        if active is None:
            return
        self.engine.abort(request_id)
        log.info("job cancelled by its client", extra={"request_id": request_id,
                                                        "completion_tokens": active.completion_tokens})
        self._end(active, "cancelled")

    def _enforce_deadlines(self) -> None:
        now = time.time()
        for active in list(self._jobs.values()):
            if active.job.deadline and now > active.job.deadline:
                self.engine.abort(active.job.request_id)
                self._finish_with_error(active, RequestTimeoutError(
                    "Generation did not finish within the server's time limit."))

    def _events_for(self, outputs: list[ChoiceOutput]) -> list[JobEvent]:
        events: list[JobEvent] = []
        for output in outputs:
            active = self._jobs.get(output.request_id)
            if active is None:
                continue
            active.completion_tokens += output.tokens
            if output.text:
                if active.first_token_at is None:
                    active.first_token_at = time.monotonic()
                events.append(active.event(EventKind.DELTA, index=output.index, text=output.text,
                                           tokens=output.tokens))
            if output.finish_reason is not None:
                events.append(active.event(EventKind.FINISH, index=output.index,
                                           finish_reason=output.finish_reason))
                active.finished_choices += 1
                if active.finished_choices == active.job.n:
                    events.append(active.event(EventKind.DONE, usage=self._usage(active)))
        metrics.GENERATED_TOKENS.labels(self.model).inc(sum(o.tokens for o in outputs))
        return events

    def _publish(self, events: list[JobEvent]) -> None:
        """Hand events to the outbox. A job whose last event is among them leaves the loop now;
        its actor is released once the event is out, so RabbitMQ's ack follows the answer."""
        batch = OutgoingBatch(events=[], reply_to={})
        events, self._started = self._started + events, []  # earlier STARTED events go first
        for event in events:
            active = self._jobs.get(event.request_id)
            if active is None:
                continue
            batch.events.append(event)
            batch.reply_to[event.request_id] = active.job.reply_to
            if event.kind == EventKind.DELTA and not active.emitted_text:
                active.emitted_text = True
                batch.first_text.add(event.request_id)
            if event.kind in TERMINAL_KINDS:
                self._end(active, "completed" if event.kind == EventKind.DONE else "failed", release=False)
                batch.on_published.append(active.done)
        if batch.events:
            batch.watch = list(self._jobs)
            # A job's first events are on the way to its first token: worth publishing inline.
            urgent = bool(batch.first_text) or any(e.kind == EventKind.STARTED for e in batch.events)
            self.outbox.send(batch, urgent=urgent)

    def _apply_publish_result(self, result: PublishResult) -> None:
        for request_id in result.unheard:
            active = self._jobs.get(request_id)
            if active is not None:
                self.engine.abort(request_id)
                log.info("nobody is listening for this job any more; stopped", extra={"request_id": request_id})
                self._end(active, "abandoned")
        for request_id in result.cancelled:
            self._cancel(request_id)

    def _finish_with_error(self, active: ActiveJob, error: LlamaGateError) -> None:
        self._publish([active.event(EventKind.ERROR, error=error.to_dict()["error"], status=error.status)])

    def _fail_all(self, error: LlamaGateError) -> None:
        for active in list(self._jobs.values()):
            self.engine.abort(active.job.request_id)
            self._finish_with_error(active, error)

    def _end(self, active: ActiveJob, outcome: str, release: bool = True) -> None:
        """Remove a job from the loop; `release` its actor now, or leave that to the outbox."""
        self._jobs.pop(active.job.request_id, None)
        metrics.JOBS.labels(self.model, outcome).inc()
        if active.first_token_at is not None:
            metrics.TIME_TO_FIRST_TOKEN.labels(self.model).observe(active.first_token_at - active.admitted_at)
        if release:
            active.done.set()
        if outcome in ("cancelled", "abandoned"):
            # No DONE event carries this job's usage: leave it where the API looks to charge it.
            self.outbox.send(OutgoingBatch(events=[], reply_to={},
                                           final_usage={active.job.request_id: self._usage(active)}))

    @staticmethod
    def _usage(active: ActiveJob) -> dict[str, int]:
        return {"prompt_tokens": active.prompt_tokens, "completion_tokens": active.completion_tokens,
                "total_tokens": active.prompt_tokens + active.completion_tokens}
