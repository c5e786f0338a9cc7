"""Liveness (/healthz) and readiness (/readyz: RabbitMQ, Redis, a live worker) probes."""

from __future__ import annotations

import gevent
import redis
from flask import Blueprint, Response, current_app

from api.json_body import json_response
from broker.rabbitmq import EnqueueError

blueprint = Blueprint("health", __name__)

PROBE_TIMEOUT = 2.0  # seconds each dependency check may take


@blueprint.get("/healthz")
def healthz() -> Response:
    """The process is up and serving HTTP."""
    return json_response({"status": "ok"})


@blueprint.get("/readyz")
def readyz() -> Response:
    """Ready to serve completions: RabbitMQ and Redis answer, the token stream is subscribed,
    and at least one worker is alive."""
    runtime = current_app.extensions["llamagate"]
    checks = {
        "redis": _check(lambda: runtime.redis.ping()),
        # The connection jobs are published on; opened now if it is not open yet.
        "rabbitmq": _check(runtime.publisher.connect),
        "event_stream": "ok" if runtime.router.subscribed else "not subscribed",
        "workers": "ok" if runtime.directory.fresh and runtime.directory.workers() else "no live worker",
    }
    ready = all(v == "ok" for v in checks.values())
    body = {"status": "ready" if ready else "not ready", "checks": checks,
            "models": sorted(runtime.directory.served_models())}
    return json_response(body, 200 if ready else 503)


def _check(probe) -> str:
    try:
        with gevent.Timeout(PROBE_TIMEOUT):
            probe()
        return "ok"
    except gevent.Timeout:
        return "timeout"
    except (redis.RedisError, EnqueueError, OSError) as exc:
        return f"error: {type(exc).__name__}"
