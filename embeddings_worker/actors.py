"""The dramatiq actor of an embeddings worker: one per served model; it only hands jobs to the batcher.

An actor blocks until its job's result has been published, so RabbitMQ's ack comes after the
work: if the worker dies holding the job, RabbitMQ redelivers it. Embedding the same inputs
again gives the same vectors, so a redelivered job simply runs again, as a new attempt (its
events are numbered afresh, as the API expects of a redelivery). RabbitMQ's `redelivered` flag
tells a redelivery apart at no cost; only then does the actor count attempts in Redis.
"""

from __future__ import annotations

import logging
import time

import dramatiq
import redis
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.middleware import CurrentMessage

from broker.contracts import ContractError, EmbeddingJob
from broker.naming import attempts_key, embeddings_actor, embeddings_queue
from embeddings_worker.batcher import EmbeddingBatcher
from shared.settings import Settings
from shared.structured_logging import request_id_var

log = logging.getLogger(__name__)

DONE_WAIT_GRACE = 30.0  # seconds an actor waits past the job's deadline before giving up on the batcher
ATTEMPTS_TTL = 3600  # seconds


def register_embeddings_actor(broker: RabbitmqBroker, batcher: EmbeddingBatcher, client: redis.Redis,
                              settings: Settings) -> dramatiq.Actor:
    model_id = batcher.model

    def embeddings(payload: dict) -> None:
        try:
            job = EmbeddingJob.from_payload(payload)
        except ContractError:
            log.exception("dropping a job this worker cannot read", extra={"model": model_id})
            return
        token = request_id_var.set(job.request_id)
        try:
            if job.start_by and time.time() > job.start_by:
                log.info("job expired in the queue; its client has given up", extra={"model": model_id})
                return
            done = batcher.submit(job, _attempt(job))
            wait = max(0.0, (job.deadline or time.time() + settings.generation_timeout) - time.time())
            if not done.wait(wait + DONE_WAIT_GRACE):
                log.error("the batcher did not end the job in time", extra={"model": model_id})
        finally:
            request_id_var.reset(token)

    def _attempt(job: EmbeddingJob) -> int:
        message = CurrentMessage.get_current_message()
        if message is None or not getattr(message, "redelivered", False):
            return 1
        pipe = client.pipeline(transaction=False)
        pipe.incr(attempts_key(job.request_id))
        pipe.expire(attempts_key(job.request_id), ATTEMPTS_TTL)
        redeliveries, _ = pipe.execute()
        log.info("redelivered job runs again", extra={"model": model_id, "attempt": 1 + redeliveries})
        return 1 + redeliveries

    # time_limit is a backstop only; it stays below RabbitMQ's consumer_timeout (30 min).
    time_limit_ms = int((settings.generation_timeout + settings.queue_timeout + 2 * DONE_WAIT_GRACE) * 1000)
    return dramatiq.actor(embeddings, broker=broker, actor_name=embeddings_actor(model_id),
                          queue_name=embeddings_queue(model_id), max_retries=0, time_limit=time_limit_ms)
