"""What every worker process does around its work: serve its metrics, and wait for SIGTERM/SIGINT."""

from __future__ import annotations

import logging
import signal
import threading

from prometheus_client import start_http_server

log = logging.getLogger(__name__)


def serve_metrics(addr: str, port: int) -> None:
    """Serve this process's Prometheus metrics; a port already taken only costs the metrics."""
    try:
        start_http_server(port, addr=addr)
        log.info("worker metrics served", extra={"port": port})
    except OSError as exc:
        # Several workers on one machine: only the first gets the port unless each is given one.
        log.warning("worker metrics port unavailable; metrics not served",
                    extra={"port": port, "error": repr(exc)})


def wait_for_stop_signal() -> None:
    """Block the main thread until SIGTERM or SIGINT, then return so the caller can shut down."""
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    stop.wait()
