"""The web process's side of token delivery: one Redis pub/sub connection per process.

The process subscribes once, at start, to its own channel; every job it enqueues names that
channel as `reply_to`, so the subscription exists before any job can publish (no race), and no
request pays for a SUBSCRIBE of its own. A reader greenlet routes each event to the gevent queue
of the request it belongs to.

If the connection drops, events published meanwhile are gone: every waiting request is told so
(`TRANSPORT_LOST`) and fails cleanly instead of waiting for events that will never come.
"""

from __future__ import annotations

import logging
import time
from typing import Optional

import gevent
import gevent.event
import gevent.queue
import redis

from broker.contracts import ContractError, decode_event_batch
from broker.naming import events_channel

log = logging.getLogger(__name__)

TRANSPORT_LOST = object()  # put on every waiting queue when the subscription broke
PING_INTERVAL = 5.0  # seconds between liveness pings on the subscriber connection
SILENCE_LIMIT = 15.0  # seconds without any reply (even to a ping) before reconnecting


class EventRouter:
    def __init__(self, redis_url: str, instance_id: str):
        self.redis_url = redis_url
        self.instance_id = instance_id
        self.channel = events_channel(instance_id)
        self._waiting: dict[str, gevent.queue.Queue] = {}
        self._subscribed = gevent.event.Event()
        self._reader: Optional[gevent.Greenlet] = None
        self._stopping = False

    def start(self) -> None:
        if self._reader is None:
            self._reader = gevent.spawn(self._run)

    def stop(self) -> None:
        self._stopping = True
        if self._reader is not None:
            self._reader.kill()
            self._reader = None

    @property
    def subscribed(self) -> bool:
        return self._subscribed.is_set()

    def wait_subscribed(self, timeout: float) -> bool:
        return self._subscribed.wait(timeout)

    def register(self, request_id: str) -> gevent.queue.Queue:
        """A queue that receives `request_id`'s events; call before the job is enqueued."""
        queue: gevent.queue.Queue = gevent.queue.Queue()
        self._waiting[request_id] = queue
        return queue

    def unregister(self, request_id: str) -> None:
        self._waiting.pop(request_id, None)

    def _run(self) -> None:
        backoff = 0.1
        while not self._stopping:
            client = redis.Redis.from_url(self.redis_url, socket_connect_timeout=2.0,
                                          client_name=f"llamagate-events-{self.instance_id}")
            pubsub = client.pubsub()
            try:
                pubsub.subscribe(self.channel)
                self._read(pubsub)
            except (redis.RedisError, OSError) as exc:
                if self._subscribed.is_set():
                    log.error("event subscription lost; failing waiting requests",
                              extra={"error": repr(exc), "waiting": len(self._waiting)})
                    backoff = 0.1  # it worked until now: retry promptly
            finally:
                self._subscribed.clear()
                self._fail_waiting()
                try:
                    pubsub.close()
                    client.close()
                except Exception:  # noqa: BLE001 - the connection is being abandoned anyway
                    pass
            gevent.sleep(backoff)
            backoff = min(backoff * 2, 2.0)

    def _read(self, pubsub: redis.client.PubSub) -> None:
        last_heard = last_ping = time.monotonic()
        while not self._stopping:
            message = pubsub.get_message(timeout=1.0)
            now = time.monotonic()
            if message is not None:
                last_heard = now
                kind = message["type"]
                if kind == "message":
                    self._dispatch(message["data"])
                elif kind == "subscribe":
                    self._subscribed.set()
                    log.info("subscribed to job events", extra={"channel": self.channel})
            if now - last_ping >= PING_INTERVAL:
                pubsub.ping()
                last_ping = now
            if now - last_heard > SILENCE_LIMIT:
                raise redis.ConnectionError(f"no reply from Redis for {SILENCE_LIMIT}s")

    def _dispatch(self, data: bytes) -> None:
        try:
            events = decode_event_batch(data)
        except ContractError:
            log.exception("dropping an undecodable event batch")
            return
        for event in events:
            queue = self._waiting.get(event.request_id)
            if queue is not None:
                queue.put(event)

    def _fail_waiting(self) -> None:
        for queue in list(self._waiting.values()):
            queue.put(TRANSPORT_LOST)
