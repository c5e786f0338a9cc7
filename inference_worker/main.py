"""An inference worker process: loads its models, consumes their queues, announces itself.

Start it with `llamagate worker`. One process serves the models in LLAMAGATE_WORKER_MODELS, one
generation loop per model; to scale, run more processes (one per GPU in production).
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
from broker.naming import chat_queue
from broker.rabbitmq import worker_broker
from broker.worker_directory import WorkerAnnouncer, WorkerInfo
from inference_worker.actors import register_chat_actor
from inference_worker.engines import create_engine
from inference_worker.generation_loop import GenerationLoop
from inference_worker.queue_depth import QueueDepthMonitor
from shared.chat_tokenizer import ChatTokenizer
from shared.registry import VISION_ENGINES, ModelRegistry, ModelSpec
from shared.settings import Settings
from shared.structured_logging import configure_logging
from shared.tokenizer_cache import prepare_tokenizer
from shared.worker_process import serve_metrics, wait_for_stop_signal

log = logging.getLogger(__name__)

SHUTDOWN_GRACE_MS = 30_000  # how long running jobs may finish after SIGTERM


def served_models(settings: Settings, registry: ModelRegistry) -> list[ModelSpec]:
    specs = []
    for model_id in settings.worker_models:
        spec = registry.get(model_id)
        if spec is None:
            raise SystemExit(f"LLAMAGATE_WORKER_MODELS names {model_id!r}, which is not in {settings.models_file}")
        if not spec.supports("chat"):
            raise SystemExit(f"model {model_id!r} is not a chat model; the inference worker cannot serve it")
        specs.append(spec)
    if not specs:
        raise SystemExit("LLAMAGATE_WORKER_MODELS is empty: this worker would serve nothing")
    return specs


def check_engine_capabilities(spec: ModelSpec, engine) -> None:
    """Refuse to serve a vision model on an engine that cannot take images: the API would accept
    (and charge for) images that every job then refuses."""
    if spec.supports("vision") and not engine.accepts_images:
        raise SystemExit(f"model {spec.id!r} has the vision capability, but the {engine.name} engine does not take "
                         "images; remove 'vision' from its capabilities or serve it on an engine among "
                         f"{', '.join(sorted(VISION_ENGINES))}")


# The generation loop may run Python for long stretches (sampling, the benchmark engine); a short
# switch interval lets the consumer, actor and outbox threads get the GIL within 0.1 ms
# instead of CPython's default 5 ms, which would otherwise add to every job's latency.
GIL_SWITCH_INTERVAL = 0.0001


def run_worker(settings: Settings) -> None:
    configure_logging(settings.log_level, settings.log_format)
    sys.setswitchinterval(GIL_SWITCH_INTERVAL)
    registry = ModelRegistry.load(settings.models_file)
    specs = served_models(settings, registry)
    worker_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    # Actor threads (checking redelivered jobs) and the loops' outboxes may all hold a connection
    # at once: size the pool for that, and make a thread wait for a free one rather than fail.
    client = redis.Redis(connection_pool=redis.BlockingConnectionPool.from_url(
        settings.redis_url, max_connections=settings.max_batch_size * len(settings.worker_models) + 8,
        timeout=10.0, socket_timeout=5.0, socket_connect_timeout=5.0))
    publisher = EventPublisher(client)

    loops: list[GenerationLoop] = []
    for spec in specs:
        tokenizer = ChatTokenizer.from_directory(prepare_tokenizer(spec.tokenizer, settings.cache_dir))
        engine = create_engine(spec, settings, tokenizer)
        check_engine_capabilities(spec, engine)
        engine.load()
        loops.append(GenerationLoop(engine, publisher, worker_id))

    broker = worker_broker(settings.broker_url)
    for loop in loops:
        register_chat_actor(broker, loop, client, publisher, settings)
        broker.declare_queue(chat_queue(loop.model), ensure=True)
        loop.start()
    # Declared here, the queues need no declaring connection in each consumer thread, where it
    # would sit idle, miss its heartbeats and be closed by RabbitMQ (noisily, at shutdown).
    del broker.connection

    by_model = {loop.model: loop for loop in loops}
    info = WorkerInfo(worker_id=worker_id, models=tuple(by_model), host=socket.gethostname(),
                      pid=os.getpid(), engine=",".join(sorted({s.engine for s in specs})),
                      max_batch_size=settings.max_batch_size, started_at=time.time())
    announcer = WorkerAnnouncer(client, info, settings.heartbeat_interval, settings.heartbeat_ttl,
                                is_healthy=lambda: all(loop.seconds_since_tick() < settings.stall_timeout
                                                       for loop in loops))
    depth = QueueDepthMonitor(settings.broker_url, list(by_model))
    if settings.worker_metrics_port:
        serve_metrics(settings.worker_metrics_addr, settings.worker_metrics_port)

    # Every actor thread holds one job for its whole generation, so the thread count is the
    # batch capacity; prefetching more than that would park jobs here that another worker could run.
    threads = settings.max_batch_size * len(loops)
    worker = dramatiq.Worker(broker, worker_threads=threads)
    worker.queue_prefetch = settings.max_batch_size
    worker.delay_prefetch = 1
    worker.start()
    announcer.start()
    depth.start()
    log.info("worker ready", extra={"worker_id": worker_id, "models": list(by_model), "threads": threads})

    wait_for_stop_signal()

    log.info("worker stopping: withdrawing, then letting running jobs finish")
    announcer.stop()
    depth.stop()
    worker.stop(timeout=SHUTDOWN_GRACE_MS)
    for loop in loops:
        loop.stop()
    broker.close()
    log.info("worker stopped")

