"""Publishing jobs from gevent web processes.

dramatiq's RabbitmqBroker keeps its pika connection in a thread-local. Under gevent every
greenlet is a "thread", so each request would open (and leak) an AMQP connection. This broker
keeps a small bounded pool of confirm-mode connections instead: a request checks one out for
the length of one publish, and waits at most `enqueue_timeout` for the whole publish, including
RabbitMQ's confirm.
"""

from __future__ import annotations

import logging
from typing import Optional

import gevent
import gevent.queue
import pika
import pika.exceptions
from dramatiq import Message
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.errors import BrokerConnectionError
from greenlet import getcurrent

from broker.rabbitmq import EnqueueError

log = logging.getLogger(__name__)

KEEPALIVE_INTERVAL = 15.0  # seconds; below RabbitMQ's heartbeat timeout so idle connections stay open


class _Slot:
    """One pooled connection and its confirm-mode channel; either may be None until first use."""

    __slots__ = ("connection", "channel")

    def __init__(self) -> None:
        self.connection: Optional[pika.BlockingConnection] = None
        self.channel = None


class PooledRabbitmqBroker(RabbitmqBroker):
    def __init__(self, *, url: str, pool_size: int = 4, enqueue_timeout: float = 2.0):
        super().__init__(url=url, confirm_delivery=True, middleware=[])
        self.pool_size = pool_size
        self.enqueue_timeout = enqueue_timeout
        self._idle: gevent.queue.LifoQueue = gevent.queue.LifoQueue()
        for _ in range(pool_size):
            self._idle.put(_Slot())
        self._held: dict[object, _Slot] = {}
        self._keepalive: Optional[gevent.Greenlet] = None

    # dramatiq's enqueue reads `self.connection` and `self.channel`; during an enqueue they are the
    # calling greenlet's checked-out slot.
    def _slot(self) -> _Slot:
        try:
            return self._held[getcurrent()]
        except KeyError:
            raise RuntimeError("PooledRabbitmqBroker connections are only usable inside enqueue()") from None

    @property
    def connection(self):
        slot = self._slot()
        if slot.connection is None or not slot.connection.is_open:
            slot.connection = pika.BlockingConnection(parameters=self.parameters)
            self.connections.add(slot.connection)
        return slot.connection

    @connection.deleter
    def connection(self):
        self._close_slot(self._slot())

    @property
    def channel(self):
        slot = self._slot()
        if slot.channel is None or not slot.channel.is_open:
            slot.channel = self.connection.channel()
            slot.channel.confirm_delivery()
            self.channels.add(slot.channel)
        return slot.channel

    @channel.deleter
    def channel(self):
        slot = self._slot()
        if slot.channel is not None:
            self.channels.discard(slot.channel)
            slot.channel = None

    def enqueue(self, message: Message, *, delay: Optional[int] = None) -> Message:
        """Publish `message` and wait for RabbitMQ's confirm, or raise EnqueueError within the timeout."""
        slot = None
        try:
            with gevent.Timeout(self.enqueue_timeout):
                slot = self._idle.get()
                self._held[getcurrent()] = slot
                return super().enqueue(message, delay=delay)
        except gevent.Timeout:
            if slot is not None:
                # The timeout may have struck mid-frame: this connection's state is unknown.
                self._close_slot(slot)
            raise EnqueueError(f"RabbitMQ did not confirm the job within {self.enqueue_timeout}s") from None
        except (BrokerConnectionError, pika.exceptions.AMQPError, OSError) as exc:
            if slot is not None:
                self._close_slot(slot)
            raise EnqueueError(f"RabbitMQ is unreachable: {exc!r}") from None
        finally:
            if slot is not None:
                self._held.pop(getcurrent(), None)
                self._idle.put(slot)

    def start_keepalive(self) -> None:
        """Service heartbeats of idle pooled connections, which pika only does when called."""
        if self._keepalive is None:
            self._keepalive = gevent.spawn(self._keepalive_loop)

    def _keepalive_loop(self) -> None:
        while True:
            gevent.sleep(KEEPALIVE_INTERVAL)
            idle = []
            while True:
                try:
                    idle.append(self._idle.get_nowait())
                except gevent.queue.Empty:
                    break
            for slot in idle:
                try:
                    if slot.connection is not None and slot.connection.is_open:
                        slot.connection.process_data_events(0)
                except Exception:  # a dead connection is simply reopened on next use
                    self._close_slot(slot)
                finally:
                    self._idle.put(slot)

    def open_connections(self) -> int:
        return sum(1 for c in self.connections if c.is_open)

    def close(self) -> None:
        if self._keepalive is not None:
            self._keepalive.kill()
            self._keepalive = None
        super().close()

    def _close_slot(self, slot: _Slot) -> None:
        connection, slot.connection, slot.channel = slot.connection, None, None
        if connection is None:
            return
        self.connections.discard(connection)
        try:
            with gevent.Timeout(0.5):
                if connection.is_open:
                    connection.close()
        except BaseException:  # noqa: BLE001 - best effort on a connection already known to be broken
            log.debug("closing a broken RabbitMQ connection failed", exc_info=True)
