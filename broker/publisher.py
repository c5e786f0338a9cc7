"""Publishing jobs from a gevent web process: one AMQP connection, confirms pipelined.

dramatiq's RabbitmqBroker keeps a blocking pika connection per thread; under gevent every
greenlet is a "thread", so each request would open (and leak) an AMQP connection, and each
publish would wait for its own confirm before the next could go. Here one asynchronous pika
connection runs on gevent's hub: any number of greenlets publish on its confirm-mode channel
without blocking each other, each waits (at most `enqueue_timeout`) for RabbitMQ's confirm of
its own message, and confirms of many messages arrive together.

Messages are dramatiq messages, published exactly as dramatiq publishes them, so dramatiq
workers consume them unchanged. The queues are declared by the workers (a web process only
publishes to a model that has a live worker); a message for a missing queue comes back as
unroutable and is an EnqueueError, never lost silently.
"""

from __future__ import annotations

import itertools
import logging
import time
from typing import Optional

import gevent
import gevent.event
import gevent.lock
import pika
import pika.exceptions
from dramatiq import Message
from pika.adapters.gevent_connection import (GeventConnection, _GeventSelectorIOLoop,
                                             _GeventSelectorIOServicesAdapter)

from broker.rabbitmq import EnqueueError

log = logging.getLogger(__name__)


class _CoalescingGeventConnection(GeventConnection):
    # pika hands each AMQP frame (method, header, body) to the socket separately: three sends
    # per message. One buffer per message makes it one.
    def _output_marshaled_frames(self, marshaled_frames):
        super()._output_marshaled_frames([b"".join(marshaled_frames)])


class _Unroutable(Exception):
    """RabbitMQ returned the message: no queue by that name."""


class JobPublisher:
    def __init__(self, url: str, enqueue_timeout: float = 2.0):
        self.parameters = pika.URLParameters(url)
        self.enqueue_timeout = enqueue_timeout
        self._connection: Optional[GeventConnection] = None
        self._channel = None
        self._connect_lock = gevent.lock.Semaphore()
        self._pending: dict[int, gevent.event.AsyncResult] = {}  # delivery tag -> confirm
        self._tag_of_message: dict[str, int] = {}  # dramatiq message id -> delivery tag
        self._tags = itertools.count(1)
        # pika builds a fresh adapter (with a pipe that is never closed) for every connection
        # unless given one: share one, so that reconnecting does not leak descriptors.
        self._io = None

    @property
    def connected(self) -> bool:
        return self._channel is not None and self._channel.is_open

    def enqueue(self, message: Message) -> None:
        """Publish `message` and wait for RabbitMQ's confirm; EnqueueError when it does not come in time."""
        tag = None
        try:
            with gevent.Timeout(self.enqueue_timeout):
                channel = self._open_channel()
                tag = next(self._tags)
                confirmed = self._pending[tag] = gevent.event.AsyncResult()
                self._tag_of_message[message.message_id] = tag
                channel.basic_publish(
                    exchange="", routing_key=message.queue_name, body=message.encode(),
                    properties=pika.BasicProperties(delivery_mode=2, message_id=message.message_id,
                                                    priority=message.options.get("broker_priority")),
                    mandatory=True)
                confirmed.get()
        except gevent.Timeout:
            raise EnqueueError(f"RabbitMQ did not confirm the job within {self.enqueue_timeout}s") from None
        except _Unroutable:
            raise EnqueueError(f"RabbitMQ has no queue {message.queue_name!r}") from None
        except (pika.exceptions.AMQPError, OSError) as exc:
            raise EnqueueError(f"RabbitMQ is unreachable: {exc!r}") from None
        finally:
            if tag is not None:
                self._pending.pop(tag, None)
            self._tag_of_message.pop(message.message_id, None)

    def connect(self) -> None:
        """Open (or confirm) the publishing connection now; EnqueueError if RabbitMQ does not answer in time."""
        try:
            with gevent.Timeout(self.enqueue_timeout):
                self._open_channel()
        except gevent.Timeout:
            raise EnqueueError(f"no connection to RabbitMQ within {self.enqueue_timeout}s") from None
        except (pika.exceptions.AMQPError, OSError) as exc:
            raise EnqueueError(f"RabbitMQ is unreachable: {exc!r}") from None

    def close(self, timeout: float = 1.0) -> None:
        """Close the connection and wait (briefly) for RabbitMQ to acknowledge it."""
        connection = self._connection
        if connection is None or not connection.is_open:
            return
        connection.close()
        deadline = time.monotonic() + timeout
        while not connection.is_closed and time.monotonic() < deadline:
            gevent.sleep(0.01)  # the close handshake runs on gevent's hub

    # --- connection management (all callbacks run on gevent's hub) ------------------------------

    def _open_channel(self):
        """The confirm-mode channel, (re)connecting first if needed; one greenlet connects at a time."""
        if self.connected:
            return self._channel
        with self._connect_lock:
            if not self.connected:
                self._connect()
        return self._channel

    def _connect(self) -> None:
        opened = gevent.event.AsyncResult()
        self._tags = itertools.count(1)  # delivery tags restart with every channel

        def on_open(connection) -> None:
            connection.channel(on_open_callback=on_channel_open)

        def on_channel_open(channel) -> None:
            channel.add_on_close_callback(self._on_channel_closed)
            channel.add_on_return_callback(self._on_return)
            channel.confirm_delivery(ack_nack_callback=self._on_confirm,
                                     callback=lambda _frame: opened.set(channel))

        def on_open_error(_connection, error) -> None:
            opened.set_exception(pika.exceptions.AMQPConnectionError(repr(error)))

        if self._io is None:
            self._io = _GeventSelectorIOServicesAdapter(_GeventSelectorIOLoop(gevent.get_hub()))
        self._connection = _CoalescingGeventConnection(
            self.parameters, on_open_callback=on_open, on_open_error_callback=on_open_error,
            on_close_callback=self._on_connection_closed, custom_ioloop=self._io)
        try:
            self._channel = opened.get()
        except BaseException:
            # A timeout may strike mid-handshake: abandon the half-open connection.
            connection, self._connection = self._connection, None
            if not connection.is_closed and not connection.is_closing:
                try:
                    connection.close()
                except pika.exceptions.AMQPError:
                    pass
            raise
        log.info("connected to RabbitMQ for publishing")

    def _on_confirm(self, frame) -> None:
        method = frame.method
        ok = isinstance(method, pika.spec.Basic.Ack)
        tags = ([t for t in self._pending if t <= method.delivery_tag] if method.multiple
                else [method.delivery_tag])
        for tag in tags:
            confirmed = self._pending.get(tag)
            if confirmed is None or confirmed.ready():
                continue
            if ok:
                confirmed.set(True)
            else:
                confirmed.set_exception(pika.exceptions.NackError([]))

    def _on_return(self, _channel, _method, properties, _body) -> None:
        # RabbitMQ sends basic.return before the ack of the same message: fail it first.
        tag = self._tag_of_message.get(properties.message_id)
        confirmed = self._pending.get(tag) if tag is not None else None
        if confirmed is not None and not confirmed.ready():
            confirmed.set_exception(_Unroutable())

    def _on_channel_closed(self, channel, reason) -> None:
        log.warning("publishing channel closed", extra={"reason": repr(reason)})
        if channel is self._channel:
            self._channel = None
        if self._connection is not None and self._connection.is_open:
            self._connection.close()
        self._fail_pending(reason)

    def _on_connection_closed(self, connection, reason) -> None:
        if connection is self._connection:
            self._connection = None
            self._channel = None
        self._fail_pending(reason)

    def _fail_pending(self, reason) -> None:
        for confirmed in list(self._pending.values()):
            if not confirmed.ready():
                confirmed.set_exception(pika.exceptions.AMQPConnectionError(repr(reason)))
