"""The worker's side of token delivery: all events of one generation step in one Redis round trip."""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field

import redis

from broker.contracts import JobEvent, encode_event_batch
from broker.naming import cancel_key, emitted_key, final_usage_key

EMITTED_TTL = 3600  # seconds; longer than any job can wait in a queue and run


@dataclass
class PublishResult:
    unheard: set[str] = field(default_factory=set)  # nobody listens for these any more
    cancelled: set[str] = field(default_factory=set)  # their clients have gone


class EventPublisher:
    def __init__(self, client: redis.Redis):
        self.client = client

    def publish(self, events: list[JobEvent], reply_to: dict[str, str], first_text: set[str] = frozenset(),
                watch: list[str] = (), final_usage: dict[str, dict[str, int]] | None = None) -> PublishResult:
        """Publish `events` grouped by the channel of each request's web process, in one round trip.

        In the same round trip: marks the requests in `first_text` (their first text is in this
        step) as "emitted", so a redelivered copy of the job knows not to stream again; and looks
        up whether any request in `watch` was cancelled; and records the `final_usage` of jobs that
        ended without a DONE event (cancelled, abandoned) for the API to charge. Reports the
        requests whose web process no longer listens and those cancelled. Raises redis errors: the
        caller decides what to do with the requests of a failed step.
        """
        by_channel: dict[str, list[JobEvent]] = defaultdict(list)
        for event in events:
            by_channel[reply_to[event.request_id]].append(event)
        pipe = self.client.pipeline(transaction=False)
        channels = list(by_channel)
        for channel in channels:
            pipe.publish(channel, encode_event_batch(by_channel[channel]))
        for request_id in first_text:
            pipe.set(emitted_key(request_id), 1, ex=EMITTED_TTL)
        for request_id, usage in (final_usage or {}).items():
            pipe.set(final_usage_key(request_id), json.dumps(usage), ex=EMITTED_TTL)
        if watch:
            pipe.mget([cancel_key(r) for r in watch])
        results = pipe.execute()
        outcome = PublishResult()
        for channel, receivers in zip(channels, results):
            if receivers == 0:
                outcome.unheard.update(e.request_id for e in by_channel[channel])
        if watch:
            outcome.cancelled = {r for r, flag in zip(watch, results[-1]) if flag is not None}
        return outcome
