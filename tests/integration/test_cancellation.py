"""A client that leaves reaches the worker in the round trip the worker makes after every step."""

from __future__ import annotations

import json

from broker.cancellation import is_cancelled, request_cancel
from broker.contracts import EventKind, JobEvent
from broker.event_publisher import EMITTED_TTL, EventPublisher
from broker.naming import final_usage_key


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


def test_the_usage_of_a_dropped_job_is_left_for_the_api_to_charge(redis_client):
    request_cancel(redis_client, "req-gone")
    result = EventPublisher(redis_client).publish(
        [], {}, watch=["req-gone"], final_usage={"req-gone": {"prompt_tokens": 12, "completion_tokens": 5}})

    assert result.cancelled == {"req-gone"}  # the cancel lookup still comes last in the round trip
    assert json.loads(redis_client.get(final_usage_key("req-gone"))) == {"prompt_tokens": 12, "completion_tokens": 5}
    assert 0 < redis_client.ttl(final_usage_key("req-gone")) <= EMITTED_TTL
