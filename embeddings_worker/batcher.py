"""The batching thread of an embeddings worker: it owns the model and runs the inputs of many
concurrent requests together.

dramatiq's actor threads hand jobs to the batcher's inbox and wait. The batcher gathers jobs for
a few milliseconds after the first one arrives, or until a forward pass's worth of inputs is
waiting, whichever comes first: that set of jobs is a round. A round's inputs are sorted by
length, so that each forward pass pads little, and run in passes of at most `batch_size` inputs.
A round's jobs are announced (a STARTED event each, in one publish) before its first pass, so the
API knows which worker holds them and waits past the queueing deadline for them. Each job's result
is published as soon as its last input is done, with its vectors in its own input order; only
then is its actor released (and its message acked).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import redis

from broker.contracts import EmbeddingJob, EventKind, JobEvent, encode_vectors
from broker.event_publisher import EventPublisher
from broker.naming import cancel_key
from embeddings_worker import metrics
from embeddings_worker.encoder import Encoder, shorten
from shared.errors import ContextLengthExceededError, InvalidRequestError, LlamaGateError, ServerError

log = logging.getLogger(__name__)

IDLE_WAIT = 0.5  # seconds the thread sleeps on its inbox when it has nothing to do
# A round takes at most this many passes' worth of inputs (whole jobs, so one large job may
# exceed it); jobs arriving meanwhile wait for the next round, so rounds stay short.
ROUND_PASSES = 8


@dataclass
class PendingJob:
    job: EmbeddingJob
    done: threading.Event
    attempt: int = 1  # deliveries of the job so far (RabbitMQ redelivers a dead worker's jobs)
    next_seq: int = 0
    vectors: Optional[np.ndarray] = None  # one row per input, filled pass by pass
    remaining: int = 0
    failed: bool = False

    @property
    def prompt_tokens(self) -> int:
        return sum(len(ids) for ids in self.job.inputs)

    def event(self, kind: str, **fields) -> JobEvent:
        event = JobEvent(request_id=self.job.request_id, kind=kind, seq=self.next_seq, attempt=self.attempt,
                         **fields)
        self.next_seq += 1
        return event


class EmbeddingBatcher:
    def __init__(self, encoder: Encoder, publisher: EventPublisher, worker_id: str, *,
                 batch_size: int, batch_wait: float):
        self.encoder = encoder
        self.publisher = publisher
        self.worker_id = worker_id
        self.model = encoder.spec.id
        self.batch_size = batch_size
        self.batch_wait = batch_wait
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._carried: Optional[PendingJob] = None  # taken from the inbox, left for the next round
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"embeddings-batcher-{self.model}", daemon=True)
        self.last_tick = time.monotonic()

    # --- called from other threads -------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        self._inbox.put(None)
        self._thread.join(timeout)

    def submit(self, job: EmbeddingJob, attempt: int = 1) -> threading.Event:
        """Hand a job over; the returned event is set once its result (or error) has been published."""
        pending = PendingJob(job, threading.Event(), attempt)
        self._inbox.put(pending)
        return pending.done

    def seconds_since_tick(self) -> float:
        return time.monotonic() - self.last_tick

    # --- the batcher thread ----------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stopping.is_set():
            self.last_tick = time.monotonic()
            jobs = self._gather()
            if jobs:
                try:
                    self._run_round(jobs)
                except Exception:  # noqa: BLE001 - the thread must survive anything a round does
                    log.exception("embeddings round failed", extra={"model": self.model})
                    self._publish([(p, self._error_event(p, ServerError("The embedding model failed.")))
                                   for p in jobs if not p.done.is_set()])

    def _take(self, timeout: Optional[float]) -> Optional[PendingJob]:
        """The next job from the inbox, or None (also what stop() puts there to wake the thread)."""
        try:
            return self._inbox.get(timeout=timeout) if timeout else self._inbox.get_nowait()
        except queue.Empty:
            return None

    def _gather(self) -> list[PendingJob]:
        """The jobs of the next round: wait for one, then collect for up to `batch_wait` or until a
        pass's worth of inputs waits; then add whatever else is already waiting, up to the round's size."""
        first, self._carried = self._carried or self._take(IDLE_WAIT), None
        if first is None:
            return []
        jobs, inputs = [first], len(first.job.inputs)
        gather_until = time.monotonic() + self.batch_wait
        while inputs < self.batch_size:
            left = gather_until - time.monotonic()
            pending = self._take(left) if left > 0 else None
            if pending is None:
                break
            jobs.append(pending)
            inputs += len(pending.job.inputs)
        limit = self.batch_size * ROUND_PASSES
        while inputs < limit:
            pending = self._take(None)
            if pending is None:
                break
            if inputs + len(pending.job.inputs) > limit:
                self._carried = pending
                break
            jobs.append(pending)
            inputs += len(pending.job.inputs)
        return jobs

    def _run_round(self, jobs: list[PendingJob]) -> None:
        outcomes: list[tuple[PendingJob, JobEvent]] = []
        admitted = []
        for pending in self._drop_abandoned(jobs):
            error = self._admission_error(pending.job)
            if error is not None:
                outcomes.append((pending, self._error_event(pending, error)))
            else:
                admitted.append(pending)
                outcomes.append((pending, pending.event(EventKind.STARTED, worker_id=self.worker_id)))
        self._publish(outcomes, release=lambda pending: pending.failed)  # started jobs run on
        if not admitted:
            return
        metrics.ROUND_JOBS.labels(self.model).observe(len(admitted))
        for pending in admitted:
            pending.vectors = np.empty((len(pending.job.inputs), self.encoder.dimensions), dtype=np.float32)
            pending.remaining = len(pending.job.inputs)
        # Identical inputs in a round are embedded once: less work, and bit-identical vectors.
        uses: dict[tuple[int, ...], list[tuple[PendingJob, int]]] = {}
        for pending in admitted:
            for index, ids in enumerate(pending.job.inputs):
                uses.setdefault(tuple(ids), []).append((pending, index))
        work = sorted(uses.items(), key=lambda item: len(item[0]))
        for start in range(0, len(work), self.batch_size):
            passed = [(ids, users) for ids, users in work[start:start + self.batch_size]
                      if any(not pending.failed for pending, _ in users)]
            if passed:
                self._publish(self._forward(passed))
            self.last_tick = time.monotonic()

    def _forward(self, passed: list[tuple[tuple[int, ...], list[tuple[PendingJob, int]]]]
                 ) -> list[tuple[PendingJob, JobEvent]]:
        """One forward pass over distinct inputs, each with the (job, input index) pairs that use it;
        returns the events of the jobs it completed (or failed)."""
        started = time.monotonic()
        try:
            vectors = self.encoder.encode([ids for ids, _ in passed])
        except Exception:  # noqa: BLE001 - a failed pass fails its jobs, not the worker
            log.exception("forward pass failed", extra={"model": self.model, "inputs": len(passed)})
            failed = {id(p): p for _, users in passed for p, _ in users if not p.failed}.values()
            return [(p, self._error_event(p, ServerError("The embedding model failed on this request.")))
                    for p in list(failed)]
        metrics.FORWARD_SECONDS.labels(self.model).observe(time.monotonic() - started)
        metrics.FORWARD_INPUTS.labels(self.model).observe(len(passed))
        completed = []
        for row, (_, users) in enumerate(passed):
            for pending, index in users:
                if pending.failed:
                    continue
                pending.vectors[index] = vectors[row]
                pending.remaining -= 1
                if pending.remaining == 0:
                    completed.append((pending, self._result_event(pending)))
        return completed

    def _admission_error(self, job: EmbeddingJob) -> Optional[LlamaGateError]:
        """The API checks all of this first; the worker checks again rather than trust its queue."""
        spec = self.encoder.spec.embedding
        if not job.inputs:
            return InvalidRequestError("'input' must not be empty.", param="input")
        for index, ids in enumerate(job.inputs):
            if not ids:
                return InvalidRequestError(f"Invalid 'input[{index}]': it must not be empty.", param="input")
            if len(ids) > spec.max_input_tokens:
                return ContextLengthExceededError(
                    f"Input {index} has {len(ids)} tokens; this model takes at most "
                    f"{spec.max_input_tokens} tokens per input.", param="input")
            if min(ids) < 0 or max(ids) >= self.encoder.vocab_size:
                return InvalidRequestError(f"Invalid 'input[{index}]': token ids must be between 0 and "
                                           f"{self.encoder.vocab_size - 1}.", param="input")
        if job.dimensions is not None and job.dimensions != spec.dimensions and (
                not spec.shortenable or not 0 < job.dimensions < spec.dimensions):
            return InvalidRequestError(f"Invalid 'dimensions': {job.dimensions}.", param="dimensions")
        return None

    def _drop_abandoned(self, jobs: list[PendingJob]) -> list[PendingJob]:
        """Jobs whose clients gave up (past `start_by`, or cancelled) leave before the model runs,
        without an answer: nobody waits for one."""
        now = time.time()
        for pending in jobs:
            if pending.job.start_by and now > pending.job.start_by:
                metrics.JOBS.labels(self.model, "expired").inc()
                pending.done.set()
        jobs = [p for p in jobs if not p.done.is_set()]
        if not jobs:
            return jobs
        try:
            flags = self.publisher.client.mget([cancel_key(p.job.request_id) for p in jobs])
        except redis.RedisError:
            return jobs  # cannot tell: embed them all
        kept = []
        for pending, flag in zip(jobs, flags):
            if flag is None:
                kept.append(pending)
            else:
                metrics.JOBS.labels(self.model, "cancelled").inc()
                pending.done.set()
        return kept

    def _result_event(self, pending: PendingJob) -> JobEvent:
        vectors = pending.vectors
        wanted = pending.job.dimensions
        if wanted is not None and wanted < vectors.shape[1]:
            vectors = shorten(vectors, wanted, self.encoder.normalizes)
        tokens = pending.prompt_tokens
        metrics.JOBS.labels(self.model, "ok").inc()
        metrics.INPUT_TOKENS.labels(self.model).inc(tokens)
        return pending.event(EventKind.DONE, usage={"prompt_tokens": tokens, "total_tokens": tokens},
                             worker_id=self.worker_id,
                             vectors=encode_vectors(vectors.astype("<f4", copy=False).tobytes()))

    def _error_event(self, pending: PendingJob, error: LlamaGateError) -> JobEvent:
        metrics.JOBS.labels(self.model, error.code or error.type).inc()
        pending.failed = True
        return pending.event(EventKind.ERROR, error=error.to_dict()["error"], status=error.status,
                             worker_id=self.worker_id)

    def _publish(self, outcomes: list[tuple[PendingJob, JobEvent]],
                 release: Callable[[PendingJob], bool] = lambda pending: True) -> None:
        """Send the events in one round trip, then release the actors of the jobs that have ended
        (which ack their messages)."""
        if not outcomes:
            return
        try:
            self.publisher.publish([event for _, event in outcomes],
                                   {p.job.request_id: p.job.reply_to for p, _ in outcomes})
        except redis.RedisError as exc:
            log.error("publishing embeddings events failed; their clients will time out",
                      extra={"model": self.model, "error": repr(exc), "jobs": len(outcomes)})
        finally:
            for pending, _ in outcomes:
                if release(pending):
                    pending.done.set()
