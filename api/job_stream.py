"""Reading one job's events on the API side, with every failure turned into an error in bounded time.

The worker's events arrive through the process's EventRouter. JobStream checks them (sequence
numbers without gaps, one attempt at a time) and watches what could make a client wait forever:
no worker for the model, a job that never starts, a worker that dies mid-job, a deadline, a
client that left, a broken subscription.
"""

from __future__ import annotations

import logging
import time
from typing import Callable, Iterator, Optional

import gevent.queue

from broker.contracts import EmbeddingJob, EventKind, GenerationJob, JobEvent
from broker.event_router import TRANSPORT_LOST
from broker.worker_directory import WorkerDirectory
from shared.errors import (LlamaGateError, ModelUnavailableError, RequestTimeoutError, ServerError,
                           ServiceUnavailableError)

log = logging.getLogger(__name__)

DEADLINE_GRACE = 10.0  # seconds past the job's deadline before the API gives up on the worker


class ClientDisconnected(Exception):
    """The HTTP client went away; the job should be cancelled."""


class JobStream:
    def __init__(self, job: GenerationJob | EmbeddingJob, events: gevent.queue.Queue, directory: WorkerDirectory,
                 *, tick: float, worker_wait_timeout: float,
                 client_gone: Callable[[], bool] = lambda: False):
        self.job = job
        self._events = events
        self._directory = directory
        self._tick = tick
        self._worker_wait_timeout = worker_wait_timeout
        self._client_gone = client_gone
        self._attempt = 0
        self._expected_seq = 0
        self.worker_id: Optional[str] = None
        self.content_seen = False
        self.completion_tokens_seen = 0  # the fallback charge if the worker's own count never comes
        self.finished = False
        self.usage: Optional[dict[str, int]] = None
        self._no_worker_since: Optional[float] = None

    def events(self) -> Iterator[Optional[JobEvent]]:
        """Yield STARTED, DELTA, FINISH and DONE events in order, and None once per tick.

        Ends after DONE. Raises a LlamaGateError when the job fails, ClientDisconnected when the
        client leaves.
        """
        next_check = time.monotonic() + self._tick
        while not self.finished:
            try:
                item = self._events.get(timeout=max(0.0, next_check - time.monotonic()))
            except gevent.queue.Empty:
                item = None
            if item is not None:
                event = self._accept(item)
                if event is not None:
                    yield event
            # Checked every tick even while events flow: a client can leave mid-generation.
            if not self.finished and time.monotonic() >= next_check:
                next_check = time.monotonic() + self._tick
                self._check_waiting()
                yield None

    def has_buffered(self) -> bool:
        """Whether more events have already arrived (so a writer can send them in one write)."""
        return not self._events.empty()

    def _accept(self, item: object) -> Optional[JobEvent]:
        if item is TRANSPORT_LOST:
            raise ServiceUnavailableError("The connection to the token stream was lost; please retry.")
        event: JobEvent = item  # type: ignore[assignment]
        if event.attempt < self._attempt:
            return None  # a late event of an attempt that has been superseded
        if event.attempt > self._attempt:
            if self.content_seen:
                # A second delivery of a job whose text already reached this client: never repeat it.
                raise ServerError("The worker generating this response failed; please retry the request.")
            self._attempt, self._expected_seq = event.attempt, 0
        if event.seq != self._expected_seq:
            log.error("job events lost", extra={"expected_seq": self._expected_seq, "got_seq": event.seq})
            raise ServerError("Part of the response was lost in transit; please retry the request.")
        self._expected_seq += 1
        if event.kind == EventKind.ERROR:
            self.finished = True
            raise LlamaGateError.from_dict(event.error or {}, status=event.status or 500)
        if event.kind == EventKind.STARTED:
            self.worker_id = event.worker_id
        elif event.kind == EventKind.DELTA:
            self.content_seen = True
            self.completion_tokens_seen += event.tokens or 0
        elif event.kind == EventKind.DONE:
            self.finished = True
            self.usage = event.usage
        return event

    def _check_waiting(self) -> None:
        """Called once a tick: decide whether waiting longer can still succeed."""
        if self._client_gone():
            raise ClientDisconnected()
        now = time.time()
        if self.worker_id is None:
            if now > self.job.start_by:
                raise RequestTimeoutError("No worker could start this request in time; the service is "
                                          "overloaded, please retry later.")
            if self._directory.fresh and not self._directory.workers_for(self.job.model):
                self._no_worker_since = self._no_worker_since or time.monotonic()
                if time.monotonic() - self._no_worker_since > self._worker_wait_timeout:
                    raise ModelUnavailableError(f"No worker is serving the model `{self.job.model}` "
                                                "right now; please retry later.")
            else:
                self._no_worker_since = None
            return
        if self._directory.fresh and not self._directory.is_alive(self.worker_id):
            if self.content_seen:
                raise ServerError("The worker generating this response stopped; please retry the request.")
            # Nothing reached the client yet: RabbitMQ redelivers the job to another worker.
            log.warning("worker lost before any output; waiting for redelivery",
                        extra={"worker_id": self.worker_id})
            self.worker_id = None
        if self.job.deadline and now > self.job.deadline + DEADLINE_GRACE:
            raise RequestTimeoutError("Generation did not finish within the server's time limit.")
