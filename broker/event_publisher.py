"""The worker's side of token delivery: all events of one generation step in one Redis round trip."""

from __future__ import annotations

import logging
from collections import defaultdict

import redis

from broker.contracts import JobEvent, encode_event_batch
from broker.naming import emitted_key

log = logging.getLogger(__name__)

EMITTED_TTL = 3600  # seconds; longer than any job can wait in a queue and run


class EventPublisher:
    def __init__(self, client: redis.Redis):
        self.client = client

    def publish(self, events: list[JobEvent], reply_to: dict[str, str],
                first_text: set[str] = frozenset()) -> set[str]:
        """Publish `events` grouped by the channel of each request's web process.

        Marks the requests in `first_text` (their first text is in this step) as "emitted" in the
        same round trip, so a redelivered copy of the job knows not to stream again. Returns the
        request ids nobody is listening for any more (their web process is gone), so the caller
        can stop them.
        Raises redis errors: the caller decides what to do with the requests of a failed step.
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
        results = pipe.execute()
        unheard: set[str] = set()
        for channel, receivers in zip(channels, results):
            if receivers == 0:
                unheard.update(e.request_id for e in by_channel[channel])
        return unheard
