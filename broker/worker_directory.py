"""Which workers are alive and which models they serve.

Each worker refreshes an announcement key with a short TTL (Redis expires it server-side, so
clock skew between machines does not matter) and adds its id to a set. Web processes read the
whole directory once per second into a local snapshot that requests consult for free.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable, Optional

import orjson
import redis

from broker.naming import WORKERS_KEY, worker_key

log = logging.getLogger(__name__)

STALE_MEMBER_AGE = 3600.0  # seconds after which a silent worker id is dropped from the set


@dataclass(frozen=True)
class WorkerInfo:
    worker_id: str
    models: tuple[str, ...]
    host: str
    pid: int
    engine: str
    max_batch_size: int
    started_at: float

    def to_json(self) -> bytes:
        return orjson.dumps(self.__dict__)

    @classmethod
    def from_json(cls, data: bytes) -> "WorkerInfo":
        fields = orjson.loads(data)
        fields["models"] = tuple(fields["models"])
        return cls(**fields)


class WorkerAnnouncer:
    """Worker side: a thread that announces the worker while `is_healthy()` says its loop is alive."""

    def __init__(self, client: redis.Redis, info: WorkerInfo, interval: float, ttl: float,
                 is_healthy: Callable[[], bool]):
        self.client = client
        self.info = info
        self.interval = interval
        self.ttl_ms = int(ttl * 1000)
        self.is_healthy = is_healthy
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="worker-announcer", daemon=True)
        self._silenced = False

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop announcing and withdraw at once, so the API stops routing here before the TTL runs out."""
        self._stop.set()
        self._thread.join(timeout=self.interval * 2)
        try:
            self.withdraw()
        except redis.RedisError:
            log.warning("could not withdraw worker announcement; it expires by itself")

    def announce(self) -> None:
        pipe = self.client.pipeline(transaction=False)
        pipe.set(worker_key(self.info.worker_id), self.info.to_json(), px=self.ttl_ms)
        pipe.zadd(WORKERS_KEY, {self.info.worker_id: time.time()})
        pipe.execute()

    def withdraw(self) -> None:
        pipe = self.client.pipeline(transaction=False)
        pipe.delete(worker_key(self.info.worker_id))
        pipe.zrem(WORKERS_KEY, self.info.worker_id)
        pipe.execute()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                if self.is_healthy():
                    self.announce()
                    if self._silenced:
                        log.info("generation loop is responsive again; announcing")
                    self._silenced = False
                elif not self._silenced:
                    # A stuck loop must not attract work: let the announcement expire.
                    log.error("generation loop is stuck; no longer announcing this worker")
                    self._silenced = True
            except redis.RedisError as exc:
                log.warning("heartbeat failed", extra={"error": repr(exc)})
            self._stop.wait(self.interval)


class WorkerDirectory:
    """API side: a periodically refreshed snapshot of live workers."""

    def __init__(self, client: redis.Redis, interval: float = 1.0):
        self.client = client
        self.interval = interval
        self._workers: dict[str, WorkerInfo] = {}
        self._refreshed_at: float = 0.0
        self._last_cleanup: float = 0.0

    def refresh(self) -> None:
        """Read the directory from Redis (one ZRANGE and one MGET)."""
        ids = [m.decode() for m in self.client.zrange(WORKERS_KEY, 0, -1)]
        workers: dict[str, WorkerInfo] = {}
        if ids:
            for worker_id, raw in zip(ids, self.client.mget([worker_key(i) for i in ids])):
                if raw is not None:
                    try:
                        workers[worker_id] = WorkerInfo.from_json(raw)
                    except (ValueError, TypeError, KeyError):
                        log.warning("ignoring a malformed worker announcement", extra={"worker_id": worker_id})
        self._workers = workers
        self._refreshed_at = time.monotonic()
        if time.time() - self._last_cleanup > 60:
            self._last_cleanup = time.time()
            self.client.zremrangebyscore(WORKERS_KEY, 0, time.time() - STALE_MEMBER_AGE)

    def run_forever(self, sleep: Callable[[float], None] = time.sleep) -> None:
        while True:
            try:
                self.refresh()
            except redis.RedisError as exc:
                log.warning("worker directory refresh failed", extra={"error": repr(exc)})
            sleep(self.interval)

    @property
    def fresh(self) -> bool:
        """Whether the snapshot is recent enough to trust (Redis answered lately)."""
        return time.monotonic() - self._refreshed_at < max(5.0, self.interval * 5)

    def is_alive(self, worker_id: str) -> bool:
        return worker_id in self._workers

    def workers_for(self, model_id: str) -> list[WorkerInfo]:
        return [w for w in self._workers.values() if model_id in w.models]

    def served_models(self) -> set[str]:
        return {model for w in self._workers.values() for model in w.models}

    def workers(self) -> list[WorkerInfo]:
        return list(self._workers.values())

    def get(self, worker_id: str) -> Optional[WorkerInfo]:
        return self._workers.get(worker_id)
