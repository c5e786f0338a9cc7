"""Fixtures shared by the integration and end-to-end suites: real services, real processes.

Tests run against the RabbitMQ and Redis of this machine, isolated from anything else running
there: jobs go to their own RabbitMQ virtual host and state to their own Redis database.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
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


class Stack:
    """Web and worker processes started for a test, stopped (all of them) at its end."""

    def __init__(self, tmp_dir: Path, broker_url: str, redis_url: str, **env: str):
        self.tmp_dir = tmp_dir
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "LLAMAGATE_BROKER_URL": broker_url,
            "LLAMAGATE_REDIS_URL": redis_url,
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

    def start_web(self, workers: int = 1, **env: str) -> subprocess.Popen:
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


@pytest.fixture
def make_stack(tmp_path_factory, broker_url, redis_url):
    """Stacks torn down at the end of the test."""
    with _stacks(tmp_path_factory, broker_url, redis_url) as make:
        yield make


@pytest.fixture(scope="session")
def make_openai_client():
    """An official `openai` SDK client pointed at a stack."""
    from openai import OpenAI

    def make(stack: Stack, **kwargs) -> OpenAI:
        return OpenAI(base_url=f"{stack.base_url}/v1", api_key="llg_sk_test", **kwargs)

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

