"""An embeddings worker process: loads its embedding models, consumes their queues, announces itself.

Start it with `llamagate embeddings-worker`. One process serves the models in
LLAMAGATE_EMBEDDINGS_MODELS, one batching thread per model; many actor threads feed each
batcher, so inputs of concurrent requests share forward passes. To scale, run more processes.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import time
import uuid

import dramatiq
import redis

from broker.event_publisher import EventPublisher
from broker.naming import embeddings_queue
from broker.rabbitmq import worker_broker
from broker.worker_directory import WorkerAnnouncer, WorkerInfo
from embeddings_worker.actors import register_embeddings_actor
from embeddings_worker.batcher import EmbeddingBatcher
from embeddings_worker.encoder import create_encoder
from shared.registry import ModelRegistry, ModelSpec
from shared.settings import Settings
from shared.structured_logging import configure_logging
from shared.worker_process import serve_metrics, wait_for_stop_signal

log = logging.getLogger(__name__)

SHUTDOWN_GRACE_MS = 30_000  # how long running jobs may finish after SIGTERM
# Short GIL slices let the consumer and actor threads hand over jobs while the batcher's thread
# runs Python between forward passes (see inference_worker.main).
GIL_SWITCH_INTERVAL = 0.0001


def served_models(settings: Settings, registry: ModelRegistry) -> list[ModelSpec]:
    specs = []
    for model_id in settings.embeddings_models:
        spec = registry.get(model_id)
        if spec is None:
            raise SystemExit(f"LLAMAGATE_EMBEDDINGS_MODELS names {model_id!r}, which is not in {settings.models_file}")
        if not spec.supports("embeddings") or spec.embedding is None:
            raise SystemExit(f"model {model_id!r} is not an embedding model; the embeddings worker cannot serve it")
        specs.append(spec)
    if not specs:
        raise SystemExit("LLAMAGATE_EMBEDDINGS_MODELS is empty: this worker would serve nothing")
    return specs


def run_embeddings_worker(settings: Settings) -> None:
    configure_logging(settings.log_level, settings.log_format)
    sys.setswitchinterval(GIL_SWITCH_INTERVAL)
    registry = ModelRegistry.load(settings.models_file)
    specs = served_models(settings, registry)
    worker_id = f"{socket.gethostname()}-{os.getpid()}-emb-{uuid.uuid4().hex[:6]}"
    # Actor threads (counting redeliveries) and the batchers may all hold a connection at once.
    client = redis.Redis(connection_pool=redis.BlockingConnectionPool.from_url(
        settings.redis_url, max_connections=settings.embeddings_worker_threads * len(specs) + 8,
        timeout=10.0, socket_timeout=5.0, socket_connect_timeout=5.0))
    publisher = EventPublisher(client)

    batchers: list[EmbeddingBatcher] = []
    for spec in specs:
        encoder = create_encoder(spec, settings)
        encoder.load()
        batchers.append(EmbeddingBatcher(encoder, publisher, worker_id, batch_size=settings.embeddings_batch_size,
                                         batch_wait=settings.embeddings_batch_wait_ms / 1000))

    broker = worker_broker(settings.broker_url)
    for batcher in batchers:
        register_embeddings_actor(broker, batcher, client, settings)
        broker.declare_queue(embeddings_queue(batcher.model), ensure=True)
        batcher.start()
    del broker.connection  # see inference_worker.main: no idle declaring connection

    info = WorkerInfo(worker_id=worker_id, models=tuple(b.model for b in batchers), host=socket.gethostname(),
                      pid=os.getpid(), engine=",".join(sorted({s.engine for s in specs})),
                      max_batch_size=settings.embeddings_batch_size, started_at=time.time())
    announcer = WorkerAnnouncer(client, info, settings.heartbeat_interval, settings.heartbeat_ttl,
                                is_healthy=lambda: all(b.seconds_since_tick() < settings.stall_timeout
                                                       for b in batchers))
    if settings.embeddings_metrics_port:
        serve_metrics(settings.worker_metrics_addr, settings.embeddings_metrics_port)

    # Each actor thread holds one request until its vectors are out: the thread count bounds how
    # many requests can share a round, so it is well above the batch size.
    threads = settings.embeddings_worker_threads * len(batchers)
    worker = dramatiq.Worker(broker, worker_threads=threads)
    worker.queue_prefetch = settings.embeddings_worker_threads
    worker.delay_prefetch = 1
    worker.start()
    announcer.start()
    log.info("embeddings worker ready", extra={"worker_id": worker_id, "models": list(info.models),
                                               "threads": threads})

    wait_for_stop_signal()

    log.info("embeddings worker stopping: withdrawing, then letting running jobs finish")
    announcer.stop()
    worker.stop(timeout=SHUTDOWN_GRACE_MS)
    for batcher in batchers:
        batcher.stop()
    broker.close()
    log.info("embeddings worker stopped")

