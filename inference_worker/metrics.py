"""Prometheus metrics of a worker process, served on LLAMAGATE_WORKER_METRICS_PORT."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

BATCH_SIZE = Gauge("llamagate_worker_batch_size", "Sequences in the running batch", ["model"])
QUEUED_IN_ENGINE = Gauge("llamagate_worker_engine_queued_requests",
                         "Requests handed to the engine but not yet running", ["model"])
QUEUE_DEPTH = Gauge("llamagate_queue_depth", "Jobs waiting in the model's RabbitMQ queue", ["model"])
GENERATED_TOKENS = Counter("llamagate_worker_generated_tokens_total", "Tokens generated", ["model"])
JOBS = Counter("llamagate_worker_jobs_total", "Jobs ended, by outcome", ["model", "outcome"])
STEP_SECONDS = Histogram("llamagate_worker_step_seconds", "Duration of one engine step", ["model"],
                         buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
TIME_TO_FIRST_TOKEN = Histogram("llamagate_worker_time_to_first_token_seconds",
                                "From admission into the batch to the first generated text", ["model"],
                                buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
