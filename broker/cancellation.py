"""Telling workers that a client has gone, so its job stops (or never starts) and frees its batch slot."""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

import redis

from broker.naming import CANCEL_CHANNEL, cancel_key

log = logging.getLogger(__name__)

CANCEL_TTL = 3600  # seconds; outlives any job's time in the queue


def request_cancel(client: redis.Redis, request_id: str) -> None:
    """Mark `request_id` cancelled (for a worker that has not taken it yet) and tell running workers."""
    pipe = client.pipeline(transaction=False)
    pipe.set(cancel_key(request_id), 1, ex=CANCEL_TTL)
    pipe.publish(CANCEL_CHANNEL, request_id)
    pipe.execute()


def is_cancelled(client: redis.Redis, request_id: str) -> bool:
    return bool(client.exists(cancel_key(request_id)))


class CancelListener:
    """Worker side: a thread that passes every cancelled request id to `on_cancel` (thread-safe callee)."""

    def __init__(self, redis_url: str, on_cancel: Callable[[str], None]):
        self.redis_url = redis_url
        self.on_cancel = on_cancel
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cancel-listener", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            client = redis.Redis.from_url(self.redis_url, socket_connect_timeout=2.0,
                                          client_name="llamagate-cancel-listener")
            pubsub = client.pubsub(ignore_subscribe_messages=True)
            try:
                pubsub.subscribe(CANCEL_CHANNEL)
                last_ping = time.monotonic()
                while not self._stop.is_set():
                    message = pubsub.get_message(timeout=1.0)
                    if message is not None and message["type"] == "message":
                        self.on_cancel(message["data"].decode())
                    if time.monotonic() - last_ping > 5.0:
                        pubsub.ping()  # surfaces a dead connection within seconds
                        last_ping = time.monotonic()
            except (redis.RedisError, OSError) as exc:
                log.warning("cancel subscription lost; reconnecting", extra={"error": repr(exc)})
                self._stop.wait(1.0)
            finally:
                try:
                    pubsub.close()
                    client.close()
                except Exception:  # noqa: BLE001
                    pass
