"""Prometheus metrics of the web processes, aggregated across gunicorn workers at /metrics.

gunicorn's config points PROMETHEUS_MULTIPROC_DIR at a shared directory before workers start,
so each process writes its samples there and any process can serve the sum.
"""

from __future__ import annotations

import os

from flask import Blueprint, Response
from prometheus_client import (CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram,
                               generate_latest)
from prometheus_client import multiprocess

REQUESTS = Counter("llamagate_http_requests_total", "HTTP requests by endpoint and status",
                   ["endpoint", "status"])
REQUEST_SECONDS = Histogram("llamagate_request_duration_seconds", "Time from request to last byte",
                            ["endpoint", "stream"],
                            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120))
TIME_TO_FIRST_TOKEN = Histogram("llamagate_time_to_first_token_seconds",
                                "Time from request to the first generated text", ["model"],
                                buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
PROMPT_TOKENS = Counter("llamagate_prompt_tokens_total", "Prompt tokens of completed requests", ["model"])
COMPLETION_TOKENS = Counter("llamagate_completion_tokens_total", "Tokens generated for clients", ["model"])
OPEN_STREAMS = Gauge("llamagate_open_streams", "Streaming responses in progress",
                     multiprocess_mode="livesum")

blueprint = Blueprint("metrics", __name__)


@blueprint.get("/metrics")
def metrics() -> Response:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)
    return Response(generate_latest(), mimetype=CONTENT_TYPE_LATEST)
