"""LlamaGate's one settings object, read from environment variables.

Every tunable lives here with a default that runs on a laptop. Each field names the
variable it is read from; `Settings.from_env()` parses them with the field's type.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

DEFAULT_MODELS_FILE = Path(__file__).with_name("models.toml")


def _env(name: str, *aliases: str, **kwargs: Any) -> Any:
    """A dataclass field read from env var `name` (or the first alias that is set)."""
    return field(metadata={"env": (name, *aliases)}, **kwargs)


@dataclass(frozen=True)
class Settings:
    # Where the distributed engine lives.
    broker_url: str = _env("LLAMAGATE_BROKER_URL", "CLOUDAMQP_URL", "RABBITMQ_URL",
                           default="amqp://guest:guest@127.0.0.1:5672/")
    redis_url: str = _env("LLAMAGATE_REDIS_URL", "REDIS_URL", default="redis://127.0.0.1:6379/0")

    # Models.
    models_file: Path = _env("LLAMAGATE_MODELS_FILE", default=DEFAULT_MODELS_FILE)
    cache_dir: Path = _env("LLAMAGATE_CACHE_DIR",
                           default=Path(os.path.expanduser("~/.cache/llamagate")))
    worker_models: tuple[str, ...] = _env("LLAMAGATE_WORKER_MODELS", default=("smollm2-135m-instruct",))

    # Generation limits.
    default_max_tokens: int = _env("LLAMAGATE_DEFAULT_MAX_TOKENS", default=1024)
    max_batch_size: int = _env("LLAMAGATE_MAX_BATCH_SIZE", default=16)
    max_choices: int = _env("LLAMAGATE_MAX_CHOICES", default=0)  # 0: min(8, max_batch_size)
    torch_threads: int = _env("LLAMAGATE_TORCH_THREADS", default=0)  # 0: one per core
    llamacpp_threads: int = _env("LLAMAGATE_LLAMACPP_THREADS", default=0)  # 0: one per core
    # KV cache cells the llama.cpp engine shares among its running requests (each holds its prompt
    # plus n * max_tokens while it runs; a request that does not fit waits). 32768 cells of
    # SmolLM2-135M take about 0.75 GB; never fewer than the model's context length.
    llamacpp_kv_tokens: int = _env("LLAMAGATE_LLAMACPP_KV_TOKENS", default=32768)
    benchmark_step_ms: float = _env("LLAMAGATE_BENCHMARK_STEP_MS", default=0.0)
    # GPU engines (ExLlamaV3, ExLlamaV2). Their paged KV cache is shared by all running jobs; by
    # default it takes this fraction of the GPU memory left after the weights.
    gpu_cache_tokens: int = _env("LLAMAGATE_GPU_CACHE_TOKENS", default=0)  # 0: size from free memory
    gpu_memory_fraction: float = _env("LLAMAGATE_GPU_MEMORY_FRACTION", default=0.9)
    gpu_prefill_chunk_tokens: int = _env("LLAMAGATE_GPU_PREFILL_CHUNK_TOKENS", default=2048)
    # ExLlamaV2 batches only with flash-attn; without it a worker refuses to start unless the
    # operator accepts one sequence at a time.
    exllamav2_allow_unbatched: bool = _env("LLAMAGATE_EXLLAMAV2_ALLOW_UNBATCHED", default=False)

    # Timeouts, in seconds.
    enqueue_timeout: float = _env("LLAMAGATE_ENQUEUE_TIMEOUT", default=2.0)
    queue_timeout: float = _env("LLAMAGATE_QUEUE_TIMEOUT", default=60.0)
    worker_wait_timeout: float = _env("LLAMAGATE_WORKER_WAIT_TIMEOUT", default=5.0)
    generation_timeout: float = _env("LLAMAGATE_GENERATION_TIMEOUT", default=600.0)
    heartbeat_interval: float = _env("LLAMAGATE_HEARTBEAT_INTERVAL", default=1.0)
    heartbeat_ttl: float = _env("LLAMAGATE_HEARTBEAT_TTL", default=5.0)
    stall_timeout: float = _env("LLAMAGATE_STALL_TIMEOUT", default=60.0)
    keepalive_interval: float = _env("LLAMAGATE_KEEPALIVE_INTERVAL", default=2.0)

    # Web tier.
    max_body_bytes: int = _env("LLAMAGATE_MAX_BODY_BYTES", default=8 * 1024 * 1024)
    redis_max_connections: int = _env("LLAMAGATE_REDIS_MAX_CONNECTIONS", default=64)
    host: str = _env("LLAMAGATE_HOST", default="127.0.0.1")
    port: int = _env("PORT", "LLAMAGATE_PORT", default=8000)
    web_workers: int = _env("WEB_CONCURRENCY", "LLAMAGATE_WEB_WORKERS", default=2)

    # Accounts and billing.
    database_url: str = _env("LLAMAGATE_DATABASE_URL", "DATABASE_URL",
                             default="sqlite:///" + os.path.expanduser("~/.local/share/llamagate/llamagate.db"))
    database_pool_size: int = _env("LLAMAGATE_DATABASE_POOL_SIZE", default=10)
    # Signs session cookies; unset, a random one is made once and kept in cache_dir (fine for one host).
    secret_key: str = _env("LLAMAGATE_SECRET_KEY", "SECRET_KEY", default="")
    admin_token: str = _env("LLAMAGATE_ADMIN_TOKEN", default="")  # empty: the admin API is off
    signup_credit_usd: str = _env("LLAMAGATE_SIGNUP_CREDIT_USD", default="5.00")
    trusted_proxies: int = _env("LLAMAGATE_TRUSTED_PROXIES", default=0)  # X-Forwarded-* hops to trust
    reservation_sweep_interval: float = _env("LLAMAGATE_RESERVATION_SWEEP_INTERVAL", default=60.0)

    # Per-key rate limits (defaults; a key may carry its own). The window is a minute in production;
    # tests shorten it rather than wait.
    rate_limit_requests: int = _env("LLAMAGATE_RATE_LIMIT_REQUESTS", default=60)
    rate_limit_tokens: int = _env("LLAMAGATE_RATE_LIMIT_TOKENS", default=100_000)
    rate_limit_concurrency: int = _env("LLAMAGATE_RATE_LIMIT_CONCURRENCY", default=10)
    rate_limit_window: float = _env("LLAMAGATE_RATE_LIMIT_WINDOW", default=60.0)
    concurrency_lease: float = _env("LLAMAGATE_CONCURRENCY_LEASE", default=30.0)  # renewed every third

    # The homepage's "Try it" demo: free, no API key, limited per client IP.
    demo_model: str = _env("LLAMAGATE_DEMO_MODEL", default="smollm2-135m-instruct")
    demo_requests_per_minute: int = _env("LLAMAGATE_DEMO_REQUESTS_PER_MINUTE", default=10)
    demo_max_tokens: int = _env("LLAMAGATE_DEMO_MAX_TOKENS", default=200)

    # Worker tier.
    worker_metrics_port: int = _env("LLAMAGATE_WORKER_METRICS_PORT", default=9101)  # 0: off
    worker_metrics_addr: str = _env("LLAMAGATE_WORKER_METRICS_ADDR", default="127.0.0.1")

    # Embeddings worker tier.
    embeddings_models: tuple[str, ...] = _env("LLAMAGATE_EMBEDDINGS_MODELS", default=("all-minilm-l6-v2",))
    embeddings_batch_size: int = _env("LLAMAGATE_EMBEDDINGS_BATCH_SIZE", default=64)  # inputs per forward pass
    embeddings_batch_wait_ms: float = _env("LLAMAGATE_EMBEDDINGS_BATCH_WAIT_MS", default=5.0)
    embeddings_worker_threads: int = _env("LLAMAGATE_EMBEDDINGS_WORKER_THREADS", default=128)
    embeddings_metrics_port: int = _env("LLAMAGATE_EMBEDDINGS_METRICS_PORT", default=9102)  # 0: off
    # One thread per worker process: measured faster than a team of threads on a busy machine
    # (see README, Benchmarks); scale out with more worker processes. 0: one per core.
    embeddings_torch_threads: int = _env("LLAMAGATE_EMBEDDINGS_TORCH_THREADS", default=1)

    # Images in chat messages (vision models). Data URLs and fetched images alike must decode as
    # PNG, JPEG, WebP or GIF within these caps; the pixel cap stops decompression bombs before decoding.
    image_max_bytes: int = _env("LLAMAGATE_IMAGE_MAX_BYTES", default=10 * 1024 * 1024)  # per image file
    image_max_pixels: int = _env("LLAMAGATE_IMAGE_MAX_PIXELS", default=25_000_000)  # width x height
    max_images_per_request: int = _env("LLAMAGATE_MAX_IMAGES_PER_REQUEST", default=8)
    # Images larger than this travel to the worker through Redis (with a TTL), not inside the job.
    image_inline_max_bytes: int = _env("LLAMAGATE_IMAGE_INLINE_MAX_BYTES", default=256 * 1024)
    # http(s) image URLs are fetched by the web process, never by a worker. Off: such URLs are a 400.
    image_fetch_enabled: bool = _env("LLAMAGATE_IMAGE_FETCH", default=True)
    image_fetch_timeout: float = _env("LLAMAGATE_IMAGE_FETCH_TIMEOUT", default=10.0)  # whole fetch, per image
    image_fetch_max_redirects: int = _env("LLAMAGATE_IMAGE_FETCH_MAX_REDIRECTS", default=3)
    # Empty: any host with a public address. Otherwise only these hosts ("example.com"), or their
    # subdomains too when written with a leading dot (".example.com").
    image_fetch_allowed_hosts: tuple[str, ...] = _env("LLAMAGATE_IMAGE_FETCH_ALLOWED_HOSTS", default=())
    # Networks (CIDR) fetched from although they are not public (loopback, private, ...): for an
    # operator's own image store. Empty by default: only public addresses.
    image_fetch_allowed_networks: tuple[str, ...] = _env("LLAMAGATE_IMAGE_FETCH_ALLOWED_NETWORKS", default=())

    # Logs.
    log_level: str = _env("LLAMAGATE_LOG_LEVEL", default="INFO")
    log_format: str = _env("LLAMAGATE_LOG_FORMAT", default="json")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> "Settings":
        """Build settings from `environ` (default: os.environ); `overrides` win over both."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            for name in f.metadata["env"]:
                raw = environ.get(name)
                if raw not in (None, ""):
                    values[f.name] = _parse(f, raw, name)
                    break
        values.update(overrides)
        settings = cls(**values)
        settings.validate()
        return settings

    def __post_init__(self) -> None:
        if self.max_choices == 0:  # "auto": as many as one batch holds, up to 8
            object.__setattr__(self, "max_choices", min(8, self.max_batch_size))

    def validate(self) -> None:
        """Reject values that would make the service misbehave rather than fail loudly later."""
        positive = ("default_max_tokens", "max_batch_size", "max_choices", "enqueue_timeout",
                    "queue_timeout", "generation_timeout", "heartbeat_interval", "heartbeat_ttl",
                    "stall_timeout", "keepalive_interval", "max_body_bytes", "database_pool_size",
                    "reservation_sweep_interval", "demo_max_tokens", "rate_limit_requests",
                    "rate_limit_tokens", "rate_limit_concurrency", "rate_limit_window", "concurrency_lease",
                    "llamacpp_kv_tokens", "gpu_prefill_chunk_tokens", "image_max_bytes", "image_max_pixels",
                    "max_images_per_request", "image_fetch_timeout")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"setting {name} must be positive, got {getattr(self, name)!r}")
        if self.max_choices > self.max_batch_size:
            raise ValueError("LLAMAGATE_MAX_CHOICES must not exceed LLAMAGATE_MAX_BATCH_SIZE: a request's "
                             "choices are generated together in one batch")
        if self.heartbeat_ttl <= self.heartbeat_interval:
            raise ValueError("LLAMAGATE_HEARTBEAT_TTL must be larger than LLAMAGATE_HEARTBEAT_INTERVAL")
        if self.generation_timeout + self.queue_timeout + 60 >= 1800:
            # Must stay below RabbitMQ's default consumer_timeout (30 min), or an unacked long job
            # would be redelivered in a loop.
            raise ValueError("LLAMAGATE_GENERATION_TIMEOUT + LLAMAGATE_QUEUE_TIMEOUT must stay under 29 minutes")
        if not 0 < self.gpu_memory_fraction <= 1 or self.gpu_cache_tokens < 0:
            raise ValueError("LLAMAGATE_GPU_MEMORY_FRACTION must be in (0, 1] and LLAMAGATE_GPU_CACHE_TOKENS >= 0")
        if self.embeddings_batch_size <= 0 or self.embeddings_worker_threads <= 0:
            raise ValueError("LLAMAGATE_EMBEDDINGS_BATCH_SIZE and _WORKER_THREADS must be positive")
        if self.embeddings_batch_wait_ms < 0:
            raise ValueError("LLAMAGATE_EMBEDDINGS_BATCH_WAIT_MS must not be negative")
        if self.image_fetch_max_redirects < 0 or self.image_inline_max_bytes < 0:
            raise ValueError("LLAMAGATE_IMAGE_FETCH_MAX_REDIRECTS and _IMAGE_INLINE_MAX_BYTES must not be negative")
        for network in self.image_fetch_allowed_networks:
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError:
                raise ValueError(f"LLAMAGATE_IMAGE_FETCH_ALLOWED_NETWORKS: {network!r} is not a network "
                                 "(CIDR such as 10.0.0.0/8, or an address)") from None
        if self.log_format not in ("json", "text"):
            raise ValueError("LLAMAGATE_LOG_FORMAT must be 'json' or 'text'")


TRUTHY = frozenset({"1", "true", "yes", "on"})
FALSY = frozenset({"0", "false", "no", "off", ""})


def _parse(f: dataclasses.Field, raw: str, name: str) -> Any:
    kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    try:
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
        if kind == "Path":
            return Path(os.path.expanduser(raw))
        if kind == "bool":
            if raw.strip().lower() not in TRUTHY | FALSY:
                raise ValueError(raw)
            return raw.strip().lower() in TRUTHY
        if kind.startswith("tuple"):
            return tuple(part.strip() for part in raw.split(",") if part.strip())
        return raw
    except ValueError:
        raise ValueError(f"environment variable {name}={raw!r} is not a valid {kind}") from None

