"""Telling workers that a client has gone, so its job stops (or never starts) and frees its batch slot.

The API sets a key; a worker's generation loop looks up the keys of all its jobs in the Redis
round trip it makes anyway after every step (see EventPublisher), so a cancel takes effect
within one step, whether the job is running or still waiting in RabbitMQ.
"""

from __future__ import annotations

import redis

from broker.naming import cancel_key

CANCEL_TTL = 3600  # seconds; outlives any job's time in the queue


def request_cancel(client: redis.Redis, request_id: str) -> None:
    """Mark `request_id` cancelled."""
    client.set(cancel_key(request_id), 1, ex=CANCEL_TTL)


def is_cancelled(client: redis.Redis, request_id: str) -> bool:
    return bool(client.exists(cancel_key(request_id)))
