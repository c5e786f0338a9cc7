"""Reports how many jobs wait in each served model's RabbitMQ queue, as a Prometheus gauge."""

from __future__ import annotations

import logging
import threading

import pika
import pika.exceptions

from broker.naming import chat_queue
from inference_worker import metrics

log = logging.getLogger(__name__)


class QueueDepthMonitor:
    def __init__(self, broker_url: str, models: list[str], interval: float = 5.0):
        self.parameters = pika.URLParameters(broker_url)
        self.models = models
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="queue-depth", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        connection = None
        while not self._stop.wait(self.interval):
            try:
                if connection is None or not connection.is_open:
                    connection = pika.BlockingConnection(self.parameters)
                channel = connection.channel()
                for model in self.models:
                    declared = channel.queue_declare(queue=chat_queue(model), passive=True)
                    metrics.QUEUE_DEPTH.labels(model).set(declared.method.message_count)
                channel.close()
            except pika.exceptions.ChannelClosedByBroker:
                pass  # the queue does not exist yet
            except (pika.exceptions.AMQPError, OSError) as exc:
                log.debug("queue depth unavailable", extra={"error": repr(exc)})
                connection = None
