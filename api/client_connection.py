"""Noticing that an HTTP client has gone away while its request waits for a worker.

Under gevent a vanished client surfaces only on the next write. A streaming response writes
regularly; a non-streaming one writes nothing until the end, so the waiting loop peeks at the
socket instead: readable with zero bytes means the peer closed the connection.
"""

from __future__ import annotations

import select
import socket
from typing import Any, Callable, Mapping


def disconnect_probe(environ: Mapping[str, Any]) -> Callable[[], bool]:
    """A cheap check of whether this request's client has closed its connection."""
    sock = environ.get("gunicorn.socket")
    if sock is None:
        return lambda: False

    def closed() -> bool:
        try:
            readable, _, _ = select.select([sock], [], [], 0)
            if not readable:
                return False
            return sock.recv(1, socket.MSG_PEEK) == b""
        except (OSError, ValueError):
            return True

    return closed
