"""The dramatiq actors of an inference worker: one per served model, each only hands jobs to its loop.

An actor blocks until its job has ended so that RabbitMQ's ack comes after the generation: if
the worker dies mid-job, RabbitMQ redelivers it. A redelivered job runs again only if its client
has received nothing yet; otherwise it ends with an error event, so no client ever gets the same
tokens twice. RabbitMQ's `redelivered` flag tells a redelivery apart at no cost; only then does
the actor consult Redis.
"""

from __future__ import annotations

import logging
import time

import dramatiq
import redis
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.middleware import CurrentMessage

from broker.contracts import ContractError, EventKind, GenerationJob, JobEvent
from broker.event_publisher import EventPublisher
from broker.naming import attempts_key, cancel_key, chat_actor, chat_queue, emitted_key
from inference_worker.generation_loop import GenerationLoop
from inference_worker.job_images import ImagesUnavailable, load_job_images
from shared.errors import LlamaGateError, ServerError
from shared.settings import Settings
from shared.structured_logging import request_id_var

log = logging.getLogger(__name__)

ATTEMPTS_TTL = 3600  # seconds
DONE_WAIT_GRACE = 30.0  # seconds an actor waits past the job's deadline before giving up on the loop


def register_chat_actor(broker: RabbitmqBroker, loop: GenerationLoop, client: redis.Redis,
                        publisher: EventPublisher, settings: Settings) -> dramatiq.Actor:
    model_id = loop.model

    def chat_completion(payload: dict) -> None:
        try:
            job = GenerationJob.from_payload(payload)
        except ContractError:
            log.exception("dropping a job this worker cannot read", extra={"model": model_id})
            return
        token = request_id_var.set(job.request_id)
        try:
            _run_job(job)
        finally:
            request_id_var.reset(token)

    def _run_job(job: GenerationJob) -> None:
        if job.start_by and time.time() > job.start_by:
            log.info("job expired in the queue; its client has given up", extra={"model": model_id})
            return
        attempt = 1
        message = CurrentMessage.get_current_message()
        if message is not None and getattr(message, "redelivered", False):
            # RabbitMQ gave this job to a worker before, which died holding it. Cancels of
            # first deliveries are found by the loop's per-step check; no round trip needed here.
            pipe = client.pipeline(transaction=False)
            pipe.incr(attempts_key(job.request_id))
            pipe.expire(attempts_key(job.request_id), ATTEMPTS_TTL)
            pipe.exists(cancel_key(job.request_id))
            pipe.exists(emitted_key(job.request_id))
            redeliveries, _, cancelled, emitted = pipe.execute()
            attempt = 1 + redeliveries
            if cancelled:
                log.info("redelivered job was cancelled meanwhile", extra={"model": model_id})
                return
            if emitted:
                log.warning("redelivered job had already streamed tokens; ending it with an error",
                            extra={"model": model_id, "attempt": attempt})
                _fail(job, attempt, ServerError("The worker generating this response failed; please retry the "
                                                "request."))
                return
        try:
            # Read and decoded here, in the actor's thread, so the generation loop never waits for them.
            images = load_job_images(job, client, settings)
        except (ImagesUnavailable, redis.RedisError) as exc:
            log.error("the job's images are unavailable", extra={"model": model_id, "error": str(exc)})
            _fail(job, attempt, ServerError("The request's images could not be read by the worker; please retry."))
            return
        done = loop.submit(job, attempt, images)
        wait = max(0.0, (job.deadline or time.time() + settings.generation_timeout) - time.time())
        if not done.wait(wait + DONE_WAIT_GRACE):
            log.error("generation loop did not end the job in time", extra={"model": model_id})

    def _fail(job: GenerationJob, attempt: int, error: LlamaGateError) -> None:
        event = JobEvent(request_id=job.request_id, kind=EventKind.ERROR, seq=0, attempt=attempt,
                         error=error.to_dict()["error"], status=error.status)
        publisher.publish([event], {job.request_id: job.reply_to})

    # time_limit is only a backstop (it cannot interrupt a forward pass); it stays below
    # RabbitMQ's consumer_timeout (30 min) so an overlong job never loops through redeliveries.
    time_limit_ms = int((settings.generation_timeout + settings.queue_timeout + 2 * DONE_WAIT_GRACE) * 1000)
    return dramatiq.actor(chat_completion, broker=broker, actor_name=chat_actor(model_id),
                          queue_name=chat_queue(model_id), max_retries=0, time_limit=time_limit_ms)
