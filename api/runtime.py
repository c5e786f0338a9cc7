"""What one web process holds for its whole life: connections, the worker directory, tokenizers.

Built by `create_app` and started lazily on the first request, after gunicorn has forked the
process and gevent has patched it (greenlets and sockets must belong to the serving process).
"""

from __future__ import annotations

import logging
import uuid
from pathlib import Path
from typing import Optional

import gevent
import redis

from api.image_fetch import ImageFetcher
from api.rate_limits.limiter import RateLimiter
from api.store.db import Database
from broker.event_router import EventRouter
from broker.publisher import JobPublisher
from broker.worker_directory import WorkerDirectory
from shared.chat_tokenizer import ChatTokenizer
from shared.embedding_tokenizer import EmbeddingTokenizer
from shared.image_tokens import ImageTokenRule, image_token_rule
from shared.registry import ModelRegistry, ModelSpec
from shared.settings import Settings
from shared.tokenizer_cache import prepare_tokenizer

log = logging.getLogger(__name__)


class Runtime:
    def __init__(self, settings: Settings, registry: Optional[ModelRegistry] = None):
        self.settings = settings
        self.registry = registry or ModelRegistry.load(settings.models_file)
        self.instance_id = uuid.uuid4().hex[:12]
        self.redis = redis.Redis(connection_pool=redis.BlockingConnectionPool.from_url(
            settings.redis_url, max_connections=settings.redis_max_connections, timeout=2.0,
            socket_timeout=5.0, socket_connect_timeout=2.0))
        self.publisher = JobPublisher(settings.broker_url, enqueue_timeout=settings.enqueue_timeout)
        self.router = EventRouter(settings.redis_url, self.instance_id)
        self.directory = WorkerDirectory(self.redis, interval=1.0)
        # Connects lazily, so a process that forks after building the app never shares a socket.
        self.db = Database(settings.database_url, pool_size=settings.database_pool_size)
        self.limiter = RateLimiter(self.redis, settings.rate_limit_window, settings.concurrency_lease)
        self._tokenizers: dict[str, ChatTokenizer] = {}  # by model id
        self._tokenizers_by_directory: dict[str, ChatTokenizer] = {}  # models may share one
        self._embedding_tokenizers: dict[str, EmbeddingTokenizer] = {}  # by model id
        self._image_token_rules: dict[str, ImageTokenRule] = {}  # by model id
        self.image_fetcher = ImageFetcher.from_settings(settings) if settings.image_fetch_enabled else None
        self._greenlets: list[gevent.Greenlet] = []
        self.started = False

    def start(self) -> None:
        if self.started:
            return
        self.started = True
        try:
            self.directory.refresh()  # so the very first request already sees the live workers
        except redis.RedisError as exc:
            log.warning("worker directory unavailable at start", extra={"error": repr(exc)})
        self.prepare_tokenizers()
        self.router.start()
        self._greenlets.append(gevent.spawn(self.directory.run_forever, gevent.sleep))
        self._greenlets.append(gevent.spawn(self._sweep_reservations_forever))
        self._greenlets.append(gevent.spawn(self._renew_leases_forever))
        log.info("web process started", extra={"instance_id": self.instance_id})

    def stop(self) -> None:
        self.router.stop()
        for greenlet in self._greenlets:
            greenlet.kill()
        self.publisher.close()
        self.db.dispose()

    def _renew_leases_forever(self) -> None:
        while True:
            gevent.sleep(self.settings.concurrency_lease / 3)
            self.limiter.renew_running()

    def _sweep_reservations_forever(self) -> None:
        from api.metering import sweep_expired_reservations

        while True:
            gevent.sleep(self.settings.reservation_sweep_interval)
            try:
                sweep_expired_reservations(self)
            except Exception:  # the database may be briefly away; try again next round
                log.exception("reservation sweep failed")

    def tokenizer(self, spec: ModelSpec) -> ChatTokenizer:
        """The model's tokenizer, loaded once per process from the local cache."""
        tokenizer = self._tokenizers.get(spec.id)
        if tokenizer is None:
            directory = str(prepare_tokenizer(spec.tokenizer, self.settings.cache_dir))
            if directory not in self._tokenizers_by_directory:  # tens of MB each: load once
                self._tokenizers_by_directory[directory] = ChatTokenizer.from_directory(Path(directory))
            tokenizer = self._tokenizers[spec.id] = self._tokenizers_by_directory[directory]
        return tokenizer

    def embedding_tokenizer(self, spec: ModelSpec) -> EmbeddingTokenizer:
        """An embedding model's tokenizer, loaded once per process."""
        tokenizer = self._embedding_tokenizers.get(spec.id)
        if tokenizer is None:
            directory = prepare_tokenizer(spec.tokenizer, self.settings.cache_dir)
            tokenizer = self._embedding_tokenizers[spec.id] = EmbeddingTokenizer.from_directory(directory)
        return tokenizer

    def image_token_rule(self, spec: ModelSpec) -> ImageTokenRule:
        """How many tokens an image takes for a vision model, read once from its processor files."""
        rule = self._image_token_rules.get(spec.id)
        if rule is None:
            rule = self._image_token_rules[spec.id] = image_token_rule(spec.weights.resolve(), spec.engine)
        return rule

    def prepare_tokenizers(self) -> None:
        """Load every chat model's tokenizer now, so no request pays for it."""
        for spec in self.registry:
            if spec.supports("chat"):
                try:
                    self.tokenizer(spec)
                except (OSError, ValueError) as exc:
                    log.warning("tokenizer unavailable", extra={"model": spec.id, "error": repr(exc)})
            if spec.supports("vision"):
                try:
                    self.image_token_rule(spec)
                except (OSError, ValueError) as exc:
                    log.warning("image-token rule unavailable", extra={"model": spec.id, "error": repr(exc)})
            if spec.supports("embeddings"):
                try:
                    self.embedding_tokenizer(spec)
                except Exception as exc:  # noqa: BLE001 - the tokenizers library raises plain Exception
                    log.warning("tokenizer unavailable", extra={"model": spec.id, "error": repr(exc)})
