"""A client that leaves reaches the worker in the round trip the worker makes after every step."""

from __future__ import annotations

from broker.cancellation import is_cancelled, request_cancel
from broker.contracts import EventKind, JobEvent
from broker.event_publisher import EventPublisher


def test_a_cancel_is_reported_with_the_next_published_step(redis_client):
    request_cancel(redis_client, "req-cancelled")
    events = [JobEvent("req-cancelled", EventKind.DELTA, 0, text="a"),
              JobEvent("req-running", EventKind.DELTA, 0, text="b")]

    result = EventPublisher(redis_client).publish(
        events, {"req-cancelled": "llg:events:x", "req-running": "llg:events:x"},
        watch=["req-cancelled", "req-running", "req-queued"])

    assert result.cancelled == {"req-cancelled"}
    assert is_cancelled(redis_client, "req-cancelled")
    assert not is_cancelled(redis_client, "req-running")
