"""The generation loop's outbox: publishes its events in order, mostly from a thread of its own.

The loop hands over each step's events and goes straight on to the next step instead of waiting
for Redis; when Redis is slower than the loop, the waiting batches go out together in one round
trip. A batch that carries a job's first events is `urgent`: if nothing is waiting or in flight,
the loop publishes it itself, saving the hand-over to another thread on the way to the first
token. What Redis reports back (requests nobody listens to, cancelled requests, a failed publish)
returns to the loop through a callback, and the loop acts on it between steps.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Callable

import redis

from broker.contracts import JobEvent
from broker.event_publisher import EventPublisher, PublishResult

log = logging.getLogger(__name__)


@dataclass
class OutgoingBatch:
    events: list[JobEvent]
    reply_to: dict[str, str]
    first_text: set[str] = field(default_factory=set)
    watch: list[str] = field(default_factory=list)  # requests to look up cancel flags for
    on_published: list[threading.Event] = field(default_factory=list)  # set once the events are out
    final_usage: dict[str, dict[str, int]] = field(default_factory=dict)  # jobs dropped without DONE


class Outbox:
    def __init__(self, publisher: EventPublisher, on_result: Callable[[PublishResult], None], name: str):
        self.publisher = publisher
        self.on_result = on_result
        self._lock = threading.Condition()
        self._pending: list[OutgoingBatch] = []
        self._busy = False  # a publish is in flight (in either thread)
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=f"outbox-{name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def send(self, batch: OutgoingBatch, urgent: bool = False) -> None:
        """Publish `batch` after everything sent before it. Call from one thread only (the loop)."""
        with self._lock:
            inline = urgent and not self._busy and not self._pending
            if inline:
                self._busy = True
            else:
                self._pending.append(batch)
                self._lock.notify()
        if inline:
            try:
                self._publish([batch])
            finally:
                with self._lock:
                    self._busy = False
                    self._lock.notify()

    def stop(self, timeout: float = 5.0) -> None:
        """Publish what is waiting, then stop."""
        with self._lock:
            self._stopping = True
            self._lock.notify()
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._lock:
                while self._busy or (not self._pending and not self._stopping):
                    self._lock.wait()
                if not self._pending and self._stopping:
                    return
                batches, self._pending = self._pending, []
                self._busy = True
            try:
                self._publish(batches)
            finally:
                with self._lock:
                    self._busy = False
                    self._lock.notify()

    def _publish(self, batches: list[OutgoingBatch]) -> None:
        events = [event for batch in batches for event in batch.events]
        reply_to = {k: v for batch in batches for k, v in batch.reply_to.items()}
        first_text = set().union(*(batch.first_text for batch in batches))
        watch = batches[-1].watch  # the loop's latest view of its running jobs
        final_usage = {k: v for batch in batches for k, v in batch.final_usage.items()}
        try:
            result = self.publisher.publish(events, reply_to, first_text, watch=watch, final_usage=final_usage)
        except redis.RedisError as exc:
            # These events are lost; their clients will notice. Stop generating for nobody.
            log.error("publishing events failed; dropping the affected jobs", extra={"error": repr(exc)})
            result = PublishResult(unheard=set(reply_to) | set(watch))
        for batch in batches:
            for done in batch.on_published:
                done.set()
        if result.unheard or result.cancelled:
            self.on_result(result)
