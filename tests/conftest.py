"""Fixtures shared by the integration and end-to-end suites: real services, real processes.

Tests run against the RabbitMQ and Redis of this machine, isolated from anything else running
there: jobs go to their own RabbitMQ virtual host and state to their own Redis database.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Optional
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import redis

ROOT = Path(__file__).resolve().parent.parent
TEST_VHOST = "llamagate-test"
TEST_REDIS_DB = 15


def _ensure_vhost(vhost: str) -> str:
    """The broker URL of a dedicated virtual host (created with rabbitmqctl where we can)."""
    base = os.environ.get("LLAMAGATE_TEST_BROKER_URL")
    if base:
        return base
    try:
        subprocess.run(["rabbitmqctl", "add_vhost", vhost], capture_output=True, timeout=60)
        subprocess.run(["rabbitmqctl", "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"],
                       capture_output=True, timeout=60, check=True)
        return f"amqp://guest:guest@127.0.0.1:5672/{vhost}"
    except (OSError, subprocess.SubprocessError):
        return "amqp://guest:guest@127.0.0.1:5672/%2F"


@pytest.fixture(scope="session")
def broker_url() -> str:
    return _ensure_vhost(TEST_VHOST)


@pytest.fixture(scope="session")
def redis_url() -> str:
    url = os.environ.get("LLAMAGATE_TEST_REDIS_URL", f"redis://127.0.0.1:6379/{TEST_REDIS_DB}")
    redis.Redis.from_url(url).flushdb()
    return url


@pytest.fixture(scope="session")
def postgres_url():
    """A PostgreSQL database for this test session, migrated; dropped at the end."""
    from api.store.db import upgrade

    url = create_postgres_database()
    upgrade(url)
    yield url
    drop_postgres_database(url)


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path):
    """An empty, migrated store: a fresh SQLite file, or the session's PostgreSQL database emptied."""
    from sqlalchemy import text

    from api.store.db import Database, upgrade

    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'store.db'}"
        upgrade(url)
    else:
        url = request.getfixturevalue("postgres_url")
    db = Database(url)
    if request.param == "postgresql":
        with db.transaction() as session:
            session.execute(text("TRUNCATE users, api_keys, ledger_entries, reservations, usage_records "
                                 "RESTART IDENTITY CASCADE"))
    yield db
    db.dispose()


@pytest.fixture
def redis_client(redis_url):
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def unused_port() -> int:
    """A TCP port nothing listens on right now (for a process's metrics endpoint, say)."""
    return free_port()


POSTGRES_ADMIN_URL = os.environ.get("LLAMAGATE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def create_postgres_database(prefix: str = "llamagate_test") -> str:
    """A new, empty PostgreSQL database (unique name, so parallel runs never share one); its URL."""
    import psycopg

    name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    return POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"


def drop_postgres_database(url: str) -> None:
    import psycopg

    name = url.rsplit("/", 1)[1]
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass(frozen=True)
class Account:
    email: str
    user_id: int
    api_key: str


class Stack:
    """Web and worker processes started for a test, stopped (all of them) at its end.

    Each stack has its own database (SQLite in its folder unless LLAMAGATE_DATABASE_URL is given),
    migrated before its web processes start.
    """

    def __init__(self, tmp_dir: Path, broker_url: str, redis_url: str, **env: str):
        self.tmp_dir = tmp_dir
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self._account: Optional[Account] = None
        self.env = {
            **os.environ,
            "LLAMAGATE_BROKER_URL": broker_url,
            "LLAMAGATE_REDIS_URL": redis_url,
            "LLAMAGATE_DATABASE_URL": f"sqlite:///{tmp_dir / 'llamagate.db'}",
            "LLAMAGATE_CACHE_DIR": os.environ.get("LLAMAGATE_CACHE_DIR",
                                                  os.path.expanduser("~/.cache/llamagate")),
            "LLAMAGATE_WORKER_METRICS_PORT": "0",
            "LLAMAGATE_EMBEDDINGS_METRICS_PORT": "0",
            "LLAMAGATE_LOG_FORMAT": "text",
            "PYTHONUNBUFFERED": "1",
            "PORT": str(self.port),
            **env,
        }
        self.env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        self.processes: list[tuple[str, subprocess.Popen]] = []

    def _spawn(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen:
        log = open(self.tmp_dir / f"{name}-{len(self.processes)}.log", "wb")
        process = subprocess.Popen(args, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        self.processes.append((name, process))
        return process

    @functools.cached_property
    def db(self):
        """The stack's database, migrated (from the test process: for provisioning and checks)."""
        from api.store.db import Database, upgrade

        upgrade(self.env["LLAMAGATE_DATABASE_URL"])
        return Database(self.env["LLAMAGATE_DATABASE_URL"])

    def usage_record(self, request_id: str, timeout: float = 15.0):
        """The usage log row of a request, waiting for it: settlement follows the response."""
        from sqlalchemy import select

        from api.store.models import UsageRecord

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.db.transaction() as session:
                record = session.scalar(select(UsageRecord).where(UsageRecord.request_id == request_id))
            if record is not None:
                return record
            time.sleep(0.1)
        raise AssertionError(f"no usage record for {request_id}")

    def create_account(self, credits: str = "100.00", email: Optional[str] = None, **key_limits) -> Account:
        """A user with an API key (with `key_limits`, such as rate_limit_concurrency) and `credits` dollars."""
        from api.accounts import api_keys, credits as credit_ledger, users
        from api.accounts.money import dollars_to_micros

        email = email or f"user-{uuid.uuid4().hex[:10]}@example.com"
        user = users.create_user(self.db, email, "correct horse battery staple")
        if dollars_to_micros(credits) > 0:
            credit_ledger.grant_credits(self.db, user.id, dollars_to_micros(credits), note="test credit")
        key = api_keys.create_key(self.db, None, user.id, "test key", **key_limits)
        return Account(email, user.id, key.secret)

    @property
    def account(self) -> Account:
        """The stack's default account, made on first use: well funded, and with rate limits no
        test reaches unless it means to (those tests make keys of their own)."""
        if self._account is None:
            self._account = self.create_account(rate_limit_requests=10**6, rate_limit_tokens=10**9,
                                                rate_limit_concurrency=10**4)
        return self._account

    @property
    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.account.api_key}"}

    def start_web(self, workers: int = 1, **env: str) -> subprocess.Popen:
        self.db  # noqa: B018  (migrates before any web process starts)
        return self._spawn("web", [sys.executable, "-m", "gunicorn", "-c", "python:api.gunicorn_config",
                                   "api.wsgi:app"],
                           {**self.env, "WEB_CONCURRENCY": str(workers), **env})

    def start_worker(self, models: str, **env: str) -> subprocess.Popen:
        return self._spawn("worker", [sys.executable, "-m", "shared.cli", "worker"],
                           {**self.env, "LLAMAGATE_WORKER_MODELS": models, **env})

    def start_embeddings_worker(self, models: str, **env: str) -> subprocess.Popen:
        return self._spawn("embeddings", [sys.executable, "-m", "shared.cli", "embeddings-worker"],
                           {**self.env, "LLAMAGATE_EMBEDDINGS_MODELS": models, **env})

    def wait_ready(self, model: str, timeout: float = 180.0, workers: int = 1) -> None:
        """Until /readyz is green and at least `workers` live workers serve `model`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                body = httpx.get(f"{self.base_url}/readyz", timeout=5).json()
                if body["status"] == "ready" and model in body["models"]:
                    if workers <= 1 or self.live_workers(model) >= workers:
                        return
            except (httpx.HTTPError, ValueError, KeyError):
                pass
            time.sleep(0.5)
        raise TimeoutError(f"stack not ready for {model} within {timeout}s:\n{self.logs()}")

    def wait_http(self, timeout: float = 60.0) -> None:
        """Until the web process answers /healthz (whatever its dependencies say)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                if httpx.get(f"{self.base_url}/healthz", timeout=5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise TimeoutError(f"web process not up within {timeout}s:\n{self.logs()}")

    def live_workers(self, model: str) -> int:
        client = redis.Redis.from_url(self.env["LLAMAGATE_REDIS_URL"])
        from broker.worker_directory import WorkerDirectory

        directory = WorkerDirectory(client)
        directory.refresh()
        return len(directory.workers_for(model))

    def check_alive(self) -> None:
        for name, process in self.processes:
            if process.poll() is not None and process.returncode not in (0, -signal.SIGKILL, -signal.SIGTERM):
                raise RuntimeError(f"{name} exited with {process.returncode}:\n{self.logs()}")

    def kill(self, process: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
        os.killpg(process.pid, sig)
        process.wait(timeout=60)

    def logs(self, tail: int = 60) -> str:
        parts = []
        for path in sorted(self.tmp_dir.glob("*.log")):
            lines = path.read_text(errors="replace").splitlines()[-tail:]
            parts.append(f"--- {path.name}\n" + "\n".join(lines))
        return "\n".join(parts)

    def stop(self) -> None:
        if "db" in self.__dict__:
            self.db.dispose()
        # Workers get the graceful SIGTERM; gunicorn gets SIGQUIT (quick shutdown), since a graceful
        # one waits up to graceful_timeout for the test clients' idle keep-alive connections.
        for name, process in self.processes:
            if process.poll() is None:
                try:
                    os.killpg(process.pid, signal.SIGQUIT if name == "web" else signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for _, process in self.processes:
            try:
                process.wait(timeout=40)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


@contextlib.contextmanager
def _stacks(tmp_path_factory, broker_url: str, redis_url: str):
    """A maker of Stacks that stops every stack it made when the block ends, whatever happened."""
    stacks: list[Stack] = []

    def make(**env: str) -> Stack:
        stack = Stack(tmp_path_factory.mktemp("stack"), broker_url, redis_url, **env)
        stacks.append(stack)
        return stack

    try:
        yield make
    finally:
        for stack in stacks:
            stack.stop()


@pytest.fixture(scope="session")
def stack_factory(tmp_path_factory, broker_url, redis_url):
    """Stacks that live for the whole session."""
    with _stacks(tmp_path_factory, broker_url, redis_url) as make:
        yield make


@pytest.fixture(scope="module")
def module_stack_factory(tmp_path_factory, broker_url, redis_url):
    """Stacks torn down at the end of the test module."""
    with _stacks(tmp_path_factory, broker_url, redis_url) as make:
        yield make


@pytest.fixture
def make_stack(tmp_path_factory, broker_url, redis_url):
    """Stacks torn down at the end of the test."""
    with _stacks(tmp_path_factory, broker_url, redis_url) as make:
        yield make


@pytest.fixture(scope="session")
def make_openai_client():
    """An official `openai` SDK client pointed at a stack."""
    from openai import OpenAI

    def make(stack: Stack, api_key: Optional[str] = None, **kwargs) -> OpenAI:
        return OpenAI(base_url=f"{stack.base_url}/v1", api_key=api_key or stack.account.api_key, **kwargs)

    return make


@pytest.fixture
def purge_queue(broker_url):
    """Empties a model's queues (chat or embeddings, and dramatiq's delay/dead-letter queues) in the test vhost."""
    import pika

    from broker.naming import chat_queue, embeddings_queue

    def purge(model_id: str) -> None:
        connection = pika.BlockingConnection(pika.URLParameters(broker_url))
        try:
            for name in [f"{base}{suffix}" for base in (chat_queue(model_id), embeddings_queue(model_id))
                         for suffix in ("", ".DQ", ".XQ")]:
                channel = connection.channel()
                try:
                    channel.queue_purge(name)
                except pika.exceptions.ChannelClosedByBroker:
                    pass
        finally:
            connection.close()

    return purge


def _wait_until(predicate, timeout: float, interval: float = 0.1, message: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"{message} not met within {timeout}s")


@pytest.fixture(scope="session")
def wait_until():
    return _wait_until



def png_bytes(size: tuple[int, int] = (32, 24), color: tuple[int, int, int] = (220, 20, 60)) -> bytes:
    """A small PNG image."""
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, "PNG")
    return out.getvalue()


class ImageServer:
    """A local HTTP server with fixed routes: an image, redirects, and answers that must be refused
    (too large, too slow, not an image). `requests` lists the paths it was asked for."""

    def __init__(self, host: str = "127.0.0.1"):
        self.host = host
        self.image = png_bytes()
        self.requests: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet
                pass

            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                server.requests.append(self.path)
                parts = urlsplit(self.path)
                query = {k: v[0] for k, v in parse_qs(parts.query).items()}
                route = getattr(server, "route_" + parts.path.strip("/").replace("-", "_").replace(".", "_"), None)
                if route is None:
                    self.answer(404, "text/plain", b"not found")
                else:
                    route(self, query)

            def answer(self, status: int, content_type: str, body: bytes, **headers: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                for name, value in headers.items():
                    self.send_header(name.replace("_", "-"), value)
                self.end_headers()
                self.wfile.write(body)

        self._server = ThreadingHTTPServer((host, 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    def url(self, path: str) -> str:
        return f"http://{self.host}:{self.port}{path}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    # Routes: /image.png is route_image_png, and so on.
    def route_image_png(self, handler, query) -> None:
        handler.answer(200, "image/png", self.image)

    def route_redirect(self, handler, query) -> None:
        handler.answer(int(query.get("status", 302)), "text/plain", b"", Location=query["to"])

    def route_redirect_loop(self, handler, query) -> None:
        handler.answer(302, "text/plain", b"", Location="/redirect-loop")

    def route_page_html(self, handler, query) -> None:
        handler.answer(200, "text/html", b"<html><body>not an image</body></html>")

    def route_corrupt_png(self, handler, query) -> None:
        handler.answer(200, "image/png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 100)

    def route_large_png(self, handler, query) -> None:
        """Declares its (large) size up front."""
        handler.answer(200, "image/png", b"\x00" * int(query["bytes"]))

    def route_undeclared_large_png(self, handler, query) -> None:
        """No Content-Length: the size shows only while reading (the body ends when the connection closes)."""
        handler.send_response(200)
        handler.send_header("Content-Type", "image/png")
        handler.send_header("Connection", "close")
        handler.end_headers()
        handler.close_connection = True
        remaining = int(query["bytes"])
        with contextlib.suppress(OSError):
            while remaining > 0:
                handler.wfile.write(b"\x00" * min(remaining, 65536))
                remaining -= 65536

    def route_slow_png(self, handler, query) -> None:
        """Drips the image a byte at a time, each within any per-read timeout."""
        handler.send_response(200)
        handler.send_header("Content-Type", "image/png")
        handler.send_header("Content-Length", str(len(self.image)))
        handler.end_headers()
        with contextlib.suppress(OSError):
            for byte in self.image:
                handler.wfile.write(bytes([byte]))
                handler.wfile.flush()
                time.sleep(float(query.get("interval", 0.2)))


@pytest.fixture
def image_server():
    """An image server on 127.0.0.1 (loopback: refused unless a test allows it)."""
    server = ImageServer("127.0.0.1")
    yield server
    server.close()


@pytest.fixture
def second_image_server():
    """Another one, on 127.0.0.2 (on Linux the whole 127/8 is loopback): for redirects between two."""
    server = ImageServer("127.0.0.2")
    yield server
    server.close()


TINY_VLM = "tiny-llava"


@pytest.fixture(scope="session")
def tiny_vlm_dir(tmp_path_factory) -> Path:
    """A tiny random-weight LLaVA (see tests/tiny_vlm.py), built once per session."""
    from tiny_vlm import build_tiny_llava

    return build_tiny_llava(tmp_path_factory.mktemp("tiny-llava"))


@pytest.fixture(scope="session")
def tiny_qwen_vl_dir(tmp_path_factory) -> Path:
    """A tiny random-weight Qwen2.5-VL (see tests/tiny_vlm.py), built once per session."""
    from tiny_vlm import build_tiny_qwen25_vl

    return build_tiny_qwen25_vl(tmp_path_factory.mktemp("tiny-qwen25-vl"))


@pytest.fixture(scope="session")
def vision_models_file(tiny_vlm_dir, tmp_path_factory) -> Path:
    """The default registry plus the tiny LLaVA (as `tiny-llava`), for stacks that serve it."""
    from shared.settings import DEFAULT_MODELS_FILE
    from tiny_vlm import registry_entry

    path = tmp_path_factory.mktemp("registry") / "models.toml"
    path.write_text(DEFAULT_MODELS_FILE.read_text() + registry_entry(TINY_VLM, tiny_vlm_dir))
    return path
