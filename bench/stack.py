"""A LlamaGate stack of its own for a benchmark: web and worker processes, isolated and always stopped.

Isolation from anything else running on the machine (a development server, the test suite):
its own RabbitMQ virtual host, its own Redis database, a free web port that is never 8000, and no
worker metrics port. Each process starts in a session (process group) of its own; `Stack.stop`
ends each group (SIGTERM, then SIGKILL after a grace period), and runs on normal exit, on
exceptions, on Ctrl-C and on SIGTERM/SIGHUP (see `install_signal_handlers`). The processes also
get SIGTERM from the kernel if the benchmark dies without cleaning up (PR_SET_PDEATHSIG).

The RabbitMQ queues of the served models are purged before and after the run: a job left over
from an interrupted run would otherwise occupy the next run's worker.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import ctypes
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional
from urllib.parse import quote, urlsplit, urlunsplit

REPO = Path(__file__).resolve().parent.parent
DEFAULT_RABBITMQ = "amqp://guest:guest@127.0.0.1:5672"
DEFAULT_VHOST = "llamagate-bench"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/14"
RESERVED_PORTS = (8000,)  # the developer's own `llamagate web`
STOP_GRACE = 10.0  # seconds a process group gets between SIGTERM and SIGKILL
PR_SET_PDEATHSIG = 1


class StackError(Exception):
    """The stack did not start, or one of its processes died."""


@dataclass
class StackConfig:
    worker_models: tuple[str, ...]
    worker_command: str = "worker"  # the `llamagate` subcommand of the workers ("embeddings-worker")
    rabbitmq: str = DEFAULT_RABBITMQ
    vhost: str = DEFAULT_VHOST
    redis_url: str = DEFAULT_REDIS_URL
    host: str = "127.0.0.1"
    port: int = 0  # 0: any free port
    web_concurrency: int = 1
    workers: int = 1
    max_batch_size: Optional[int] = None  # None: LlamaGate's default
    benchmark_step_ms: Optional[float] = None
    log_level: str = "INFO"
    extra_env: dict[str, str] = field(default_factory=dict)
    startup_timeout: float = 180.0
    keep_logs: bool = False

    @property
    def broker_url(self) -> str:
        parts = urlsplit(self.rabbitmq)
        return urlunsplit((parts.scheme, parts.netloc, "/" + quote(self.vhost, safe=""), parts.query, ""))

    @classmethod
    def from_args(cls, args: argparse.Namespace, worker_models: tuple[str, ...], **overrides) -> "StackConfig":
        """A config from the flags `add_stack_arguments` declared; `overrides` win."""
        values = dict(rabbitmq=args.rabbitmq, vhost=args.vhost, redis_url=args.redis_url, port=args.port,
                      log_level=args.log_level, startup_timeout=args.startup_timeout, keep_logs=args.keep_logs)
        values.update(overrides)
        return cls(worker_models=worker_models, **values)

    def environment(self, port: int) -> dict[str, str]:
        env = dict(os.environ)
        env.update({
            "LLAMAGATE_BROKER_URL": self.broker_url,
            "LLAMAGATE_REDIS_URL": self.redis_url,
            "LLAMAGATE_HOST": self.host,
            # Settings reads PORT before LLAMAGATE_PORT: set both so neither can come from outside.
            "PORT": str(port), "LLAMAGATE_PORT": str(port),
            "WEB_CONCURRENCY": str(self.web_concurrency), "LLAMAGATE_WEB_WORKERS": str(self.web_concurrency),
            "LLAMAGATE_WORKER_MODELS": ",".join(self.worker_models),
            "LLAMAGATE_WORKER_METRICS_PORT": "0",
            "LLAMAGATE_LOG_LEVEL": self.log_level,
            "PYTHONUNBUFFERED": "1",
            # gunicorn >= 25 otherwise binds (and on exit deletes) ~/.gunicorn/gunicorn.ctl, the
            # same control socket path as every other gunicorn of this user, the dev server's too.
            "GUNICORN_CMD_ARGS": "--no-control-socket",
        })
        # The aliases Settings would fall back on must not point at someone else's services.
        for alias in ("CLOUDAMQP_URL", "RABBITMQ_URL", "REDIS_URL"):
            env.pop(alias, None)
        if self.max_batch_size is not None:
            env["LLAMAGATE_MAX_BATCH_SIZE"] = str(self.max_batch_size)
        if self.benchmark_step_ms is not None:
            env["LLAMAGATE_BENCHMARK_STEP_MS"] = str(self.benchmark_step_ms)
        env.update(self.extra_env)
        return env

    def describe(self) -> dict:
        """The settings a reader needs to reproduce the run."""
        described = {"broker_url": self.broker_url, "redis_url": self.redis_url,
                     "web_concurrency": self.web_concurrency, "workers": self.workers,
                     "worker_models": ",".join(self.worker_models), "log_level": self.log_level}
        if self.max_batch_size is not None:
            described["max_batch_size"] = self.max_batch_size
        if self.benchmark_step_ms is not None:
            described["benchmark_step_ms"] = self.benchmark_step_ms
        described.update(self.extra_env)
        return described


def add_stack_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("stack isolation")
    group.add_argument("--rabbitmq", default=DEFAULT_RABBITMQ,
                       help="RabbitMQ URL without the virtual host (default: %(default)s)")
    group.add_argument("--vhost", default=DEFAULT_VHOST,
                       help="RabbitMQ virtual host for this stack; must exist (default: %(default)s)")
    group.add_argument("--redis-url", default=DEFAULT_REDIS_URL,
                       help="Redis URL with the database for this stack (default: %(default)s)")
    group.add_argument("--port", type=int, default=0,
                       help="web port; 0 picks a free one, 8000 is refused (default: %(default)s)")
    group.add_argument("--log-level", default="INFO",
                       help="LLAMAGATE_LOG_LEVEL of the stack's processes (default: %(default)s)")
    group.add_argument("--startup-timeout", type=float, default=180.0,
                       help="seconds to wait for /readyz (default: %(default)s)")
    group.add_argument("--keep-logs", action="store_true",
                       help="keep the processes' log directory (kept anyway when something fails)")


def check_stack_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.port in RESERVED_PORTS:
        parser.error(f"--port {args.port} is reserved for the development server; pick another or 0")
    if not 0 <= args.port < 65536:
        parser.error("--port must be between 0 and 65535")


def install_signal_handlers() -> None:
    """Turn SIGTERM and SIGHUP into SystemExit, so `with Stack(...)` blocks stop their processes.

    SIGINT raises KeyboardInterrupt even where the shell started us with it ignored (a background
    job of a script), so that `kill -INT` cleans up as Ctrl-C does.
    """
    def exit_on_signal(signum: int, _frame) -> None:
        raise SystemExit(128 + signum)

    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, exit_on_signal)
    signal.signal(signal.SIGINT, signal.default_int_handler)


@contextlib.contextmanager
def exit_on_stack_failure():
    """Turn a stack that would not start (exit 2) or a Ctrl-C (exit 130) into the script's exit code."""
    try:
        yield
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        print("interrupted; the stack was stopped", file=sys.stderr)
        raise SystemExit(130) from None


def free_port(host: str) -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def ensure_port_free(host: str, port: int) -> None:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise StackError(f"port {host}:{port} is in use: {exc}") from None


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the benchmark process dies, however it dies."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _llamagate_command(command: str) -> list[str]:
    executable = REPO / ".venv" / "bin" / "llamagate"
    if executable.exists():
        return [str(executable), command]
    return [sys.executable, "-m", "shared.cli", command]


class Stack:
    """Web and worker processes for one benchmark; use as a context manager."""

    def __init__(self, config: StackConfig):
        self.config = config
        self.port = config.port or free_port(config.host)
        self.log_dir = Path(tempfile.mkdtemp(prefix="llamagate-bench-"))
        self.web: Optional[subprocess.Popen] = None
        self.workers: list[subprocess.Popen] = []
        self._log_files: list = []
        self._failed = False
        self._stopped = False
        self.database_url = f"sqlite:///{self.log_dir / 'llamagate.db'}"
        self.api_key: Optional[str] = None  # a funded account's key, made by start()

    @property
    def url(self) -> str:
        return f"http://{self.config.host}:{self.port}"

    def __enter__(self) -> "Stack":
        atexit.register(self.stop)
        try:
            self.start()
        except BaseException:
            self._failed = True
            self.stop()
            raise
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None and not issubclass(exc_type, (KeyboardInterrupt, SystemExit)):
            self._failed = True
        self.stop()

    def start(self, start_web: bool = True) -> None:
        ensure_port_free(self.config.host, self.port)
        purge_queues(self.config.broker_url, self.config.worker_models)
        env = self.config.environment(self.port)
        env["LLAMAGATE_DATABASE_URL"] = self.database_url
        self.api_key = self._create_account()
        # Web processes share Prometheus samples through this directory; ours, so it is cleaned up.
        env["PROMETHEUS_MULTIPROC_DIR"] = str(self.log_dir / "prometheus")
        os.mkdir(env["PROMETHEUS_MULTIPROC_DIR"])
        for index in range(self.config.workers):
            self.workers.append(self._spawn(f"worker-{index}", _llamagate_command(self.config.worker_command), env))
        if start_web:
            self.web = self._spawn("web", _llamagate_command("web"), env)
            self.wait_ready()

    def _create_account(self) -> str:
        """A user with credits that no benchmark can spend, in this stack's own database; its key."""
        from api.accounts import api_keys, credits, users
        from api.store.db import Database, upgrade

        upgrade(self.database_url)
        db = Database(self.database_url)
        try:
            user = users.create_user(db, "bench@example.com", "benchmark password")
            credits.grant_credits(db, user.id, 10**12, note="benchmark credit")
            return api_keys.create_key(db, None, user.id, "bench", rate_limit_requests=10**9, rate_limit_tokens=10**9,
                                       rate_limit_concurrency=10**6).secret
        finally:
            db.dispose()

    def _spawn(self, name: str, command: list[str], env: dict[str, str]) -> subprocess.Popen:
        log_file = open(self.log_dir / f"{name}.log", "ab")
        self._log_files.append(log_file)
        return subprocess.Popen(command, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=log_file,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                preexec_fn=_die_with_parent)

    def processes(self) -> list[tuple[str, subprocess.Popen]]:
        named = [(f"worker-{i}", p) for i, p in enumerate(self.workers)]
        return named + ([("web", self.web)] if self.web is not None else [])

    def check_alive(self) -> None:
        for name, process in self.processes():
            if process.poll() is not None:
                self._failed = True
                raise StackError(f"{name} exited with status {process.returncode}; last lines of its log:\n"
                                 + self.log_tail(name))

    def log_tail(self, name: str, lines: int = 15) -> str:
        try:
            text = (self.log_dir / f"{name}.log").read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def readiness(self) -> tuple[int, dict]:
        """GET /readyz: (status, body); (0, {}) when nothing answers."""
        connection = http.client.HTTPConnection(self.config.host, self.port, timeout=5)
        try:
            connection.request("GET", "/readyz")
            response = connection.getresponse()
            return response.status, json.loads(response.read() or b"{}")
        except (OSError, ValueError, http.client.HTTPException):
            return 0, {}
        finally:
            connection.close()

    def announced_worker_pids(self) -> set[int]:
        """Process ids of the workers announced in this stack's Redis database."""
        import redis

        from broker.worker_directory import WorkerDirectory

        client = redis.Redis.from_url(self.config.redis_url, socket_timeout=5, socket_connect_timeout=5)
        try:
            directory = WorkerDirectory(client)
            directory.refresh()
            return {worker.pid for worker in directory.workers()}
        except redis.RedisError:
            return set()
        finally:
            client.close()

    def wait_ready(self) -> None:
        """Until /readyz answers 200 and lists every model, and each of our workers has announced
        itself (an announcement left by an earlier run's worker lingers for its TTL)."""
        deadline = time.monotonic() + self.config.startup_timeout
        wanted = set(self.config.worker_models)
        ours = {process.pid for process in self.workers}
        body: dict = {}
        while time.monotonic() < deadline:
            self.check_alive()
            status, body = self.readiness()
            if status == 200 and wanted <= set(body.get("models", ())) and ours <= self.announced_worker_pids():
                return
            time.sleep(0.5)
        self._failed = True
        raise StackError(f"not ready after {self.config.startup_timeout:.0f}s: /readyz said {body}; "
                         f"logs in {self.log_dir}")

    def web_worker_pids(self) -> list[int]:
        """The gunicorn worker processes (children of the master, which is the `web` process)."""
        return children_of(self.web.pid) if self.web is not None else []

    def stop(self) -> None:
        """Stop every process group: the web first (so it cancels its jobs), then the workers."""
        if self._stopped:
            return
        self._stopped = True
        for process in ([self.web] if self.web else []) + self.workers:
            stop_group(process)
        for log_file in self._log_files:
            log_file.close()
        try:
            purge_queues(self.config.broker_url, self.config.worker_models)
        except Exception as exc:  # noqa: BLE001 - cleanup must go on; the next run purges again
            print(f"warning: could not purge the benchmark queues: {exc!r}", file=sys.stderr)
        if self._failed or self.config.keep_logs:
            print(f"stack logs kept in {self.log_dir}", file=sys.stderr)
        else:
            shutil.rmtree(self.log_dir, ignore_errors=True)
        atexit.unregister(self.stop)


def stop_group(process: subprocess.Popen, grace: float = STOP_GRACE) -> None:
    """SIGTERM the process's group, SIGKILL it after `grace`, and sweep any member left behind."""
    pgid = process.pid  # start_new_session made it the group leader
    _signal_group(pgid, signal.SIGTERM)
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        _signal_group(pgid, signal.SIGKILL)
        process.wait()
    # gunicorn workers may outlive a killed master; they are still in its group.
    deadline = time.monotonic() + grace
    while _group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.1)
    _signal_group(pgid, signal.SIGKILL)


def _signal_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def purge_queues(broker_url: str, models: tuple[str, ...]) -> None:
    """Empty the models' job queues (and dramatiq's delay and dead-letter queues) in this vhost."""
    import pika
    import pika.exceptions

    from broker.naming import chat_queue, embeddings_queue

    parameters = pika.URLParameters(broker_url)
    parameters.socket_timeout = parameters.blocked_connection_timeout = 5
    try:
        connection = pika.BlockingConnection(parameters)
    except pika.exceptions.AMQPError as exc:
        raise StackError(f"cannot open RabbitMQ at {broker_url} (does the vhost exist?): {exc!r}") from None
    try:
        for base in [name(model) for model in models for name in (chat_queue, embeddings_queue)]:
            for queue in (base, f"{base}.DQ", f"{base}.XQ"):
                channel = connection.channel()
                try:
                    channel.queue_purge(queue)
                    channel.close()
                except pika.exceptions.ChannelClosedByBroker:
                    pass  # 404: the queue was never declared in this vhost
    finally:
        connection.close()


def children_of(pid: int) -> list[int]:
    children = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _read_stat(int(entry))
            if stat is not None and int(stat[1]) == pid:
                children.append(int(entry))
    return sorted(children)


def _read_stat(pid: int) -> Optional[list[str]]:
    """/proc/<pid>/stat's fields after the command name (which may hold spaces): state, ppid, ..."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2:].split()


def rss_kib(pid: int) -> Optional[int]:
    """VmRSS of a process in KiB, or None if it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def open_fds(pid: int) -> Optional[int]:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time the processes have used so far."""
    total = 0.0
    for pid in pids:
        stat = _read_stat(pid)
        if stat is not None:
            # After the command name: state is field 3 of stat(5), utime 14 and stime 15.
            total += (int(stat[11]) + int(stat[12])) / CLOCK_TICKS
    return total
