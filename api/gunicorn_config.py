"""gunicorn settings for LlamaGate's web tier (`gunicorn -c python:api.gunicorn_config api.wsgi:app`)."""

from __future__ import annotations

import os
import tempfile

from shared.settings import Settings

_settings = Settings.from_env()

bind = f"{_settings.host}:{_settings.port}"
workers = _settings.web_workers
worker_class = "gevent"
# One gevent worker holds many idle streams; the limit is memory and file descriptors, not threads.
worker_connections = 2000
# A request may wait in the queue and then generate for minutes; gevent workers heartbeat to the
# arbiter on their own, so this only bounds a worker that stops scheduling greenlets altogether.
timeout = 120
graceful_timeout = 30
keepalive = 75  # seconds; longer than common load-balancer idle timeouts
# Several instances may share a host (and tests start many); none of them needs gunicornc.
control_socket_disable = True
accesslog = None  # each completion is logged once, with its request id, by the app

# Web processes share Prometheus samples through a directory (see api/metrics.py). It must be
# set before any worker imports prometheus_client.
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="llamagate-prometheus-")


def on_starting(server) -> None:
    """Convert tokenizers once in the master, so workers only read the cached files."""
    from shared.registry import ModelRegistry
    from shared.tokenizer_cache import prepare_tokenizer

    for spec in ModelRegistry.load(_settings.models_file):
        if spec.supports("chat"):
            try:
                prepare_tokenizer(spec.tokenizer, _settings.cache_dir)
            except OSError as exc:
                server.log.warning("tokenizer for %s unavailable: %s", spec.id, exc)


def worker_exit(server, worker) -> None:
    """Close the web process's RabbitMQ and Redis connections cleanly instead of dropping them."""
    runtime = getattr(getattr(worker, "wsgi", None), "extensions", {}).get("llamagate")
    if runtime is not None and runtime.started:
        runtime.stop()


def child_exit(server, worker) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
