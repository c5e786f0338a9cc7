"""A client that leaves reaches the workers: at once through pub/sub, later through the cancel key."""

from __future__ import annotations

import queue
import time

from broker.cancellation import CancelListener, is_cancelled, request_cancel


def test_a_cancel_reaches_a_listening_worker_and_is_remembered(redis_client, redis_url):
    received: queue.Queue = queue.Queue()
    listener = CancelListener(redis_url, received.put)
    listener.start()
    try:
        deadline = time.monotonic() + 5
        # Subscribing is asynchronous: cancel until the listener has heard one.
        while time.monotonic() < deadline:
            request_cancel(redis_client, "req-cancelled")
            try:
                assert received.get(timeout=0.2) == "req-cancelled"
                break
            except queue.Empty:
                continue
        else:
            raise AssertionError("the cancel listener never received the cancel")
        assert is_cancelled(redis_client, "req-cancelled")
        assert not is_cancelled(redis_client, "req-never-cancelled")
    finally:
        listener.stop()
