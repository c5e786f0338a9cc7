"""dramatiq on RabbitMQ: the broker workers consume from, and the job messages the web tier
publishes to it (with `broker.publisher.JobPublisher`)."""

from __future__ import annotations

import dramatiq
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.middleware import AgeLimit, CurrentMessage, Retries, ShutdownNotifications, TimeLimit


class EnqueueError(Exception):
    """RabbitMQ did not confirm a job in time: the caller answers 503 instead of losing the job silently."""


def worker_broker(url: str) -> RabbitmqBroker:
    """The broker a worker process consumes with.

    AgeLimit drops jobs whose client has given up; Retries is present only so that actors can
    declare `max_retries=0` (a failed generation must never run again); TimeLimit is a backstop
    behind the deadline the generation loop enforces itself; CurrentMessage lets an actor see
    whether RabbitMQ redelivered its message.
    """
    return RabbitmqBroker(url=url, confirm_delivery=True,
                          middleware=[AgeLimit(), TimeLimit(), ShutdownNotifications(), Retries(),
                                      CurrentMessage()])


def build_job_message(queue_name: str, actor_name: str, payload: dict, max_age_ms: int) -> dramatiq.Message:
    """The dramatiq message for one job, as an actor declared on `queue_name` expects it."""
    return dramatiq.Message(queue_name=queue_name, actor_name=actor_name, args=(payload,), kwargs={},
                            options={"max_age": max_age_ms})
