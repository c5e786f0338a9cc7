"""Prometheus metrics of an embeddings worker process, served on LLAMAGATE_EMBEDDINGS_METRICS_PORT."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

FORWARD_INPUTS = Histogram("llamagate_embeddings_forward_inputs", "Inputs in one forward pass", ["model"],
                           buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512))
FORWARD_SECONDS = Histogram("llamagate_embeddings_forward_seconds", "Duration of one forward pass", ["model"],
                            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
ROUND_JOBS = Histogram("llamagate_embeddings_round_jobs", "Requests batched together in one round", ["model"],
                       buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256))
INPUT_TOKENS = Counter("llamagate_embeddings_input_tokens_total", "Tokens embedded", ["model"])
JOBS = Counter("llamagate_embeddings_jobs_total", "Embeddings jobs ended, by outcome", ["model", "outcome"])
