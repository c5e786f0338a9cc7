"""Names shared by the API and the workers: RabbitMQ queues, dramatiq actors, Redis keys and channels."""

from __future__ import annotations

import re

_UNSAFE = re.compile(r"[^a-zA-Z0-9_.-]")

# Redis keys and channels.
WORKERS_KEY = "llg:workers"  # sorted set: worker id -> unix time of its last heartbeat


def _slug(model_id: str) -> str:
    return _UNSAFE.sub("_", model_id)


def chat_queue(model_id: str) -> str:
    """One RabbitMQ queue per model: every worker serving the model consumes it."""
    return f"llamagate.chat.{_slug(model_id)}"


def chat_actor(model_id: str) -> str:
    return f"chat_completion__{_slug(model_id)}"


def embeddings_queue(model_id: str) -> str:
    """One RabbitMQ queue per embedding model, consumed by the embeddings workers serving it."""
    return f"llamagate.embeddings.{_slug(model_id)}"


def embeddings_actor(model_id: str) -> str:
    return f"embeddings__{_slug(model_id)}"


def events_channel(instance_id: str) -> str:
    """The pub/sub channel of one web process: events for all the requests it holds."""
    return f"llg:events:{instance_id}"


def cancel_key(request_id: str) -> str:
    """Set when a client gives up, so that a job not yet started is dropped when a worker takes it."""
    return f"llg:cancel:{request_id}"


def attempts_key(request_id: str) -> str:
    """Counts deliveries of a job to workers (RabbitMQ redelivers when a worker dies)."""
    return f"llg:job:{request_id}:attempts"


def emitted_key(request_id: str) -> str:
    """Set once any token of the job was published: a redelivered job must not stream again."""
    return f"llg:job:{request_id}:emitted"


def worker_key(worker_id: str) -> str:
    """A worker's announcement (models it serves, host, pid), expiring unless refreshed."""
    return f"llg:worker:{worker_id}"


def final_usage_key(request_id: str) -> str:
    """A job's usage when it ended without a DONE event reaching its client (cancelled, abandoned),
    so the API can charge what was really generated before the cancel took effect."""
    return f"llg:job:{request_id}:usage"


def image_key(request_id: str, index: int) -> str:
    """A large image of a chat job (the file's bytes), written by the API with a TTL for the worker."""
    return f"llg:job:{request_id}:image:{index}"
