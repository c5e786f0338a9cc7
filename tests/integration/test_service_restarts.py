"""RabbitMQ and Redis restart under a running stack: requests fail fast meanwhile, and recover after.

These tests stop and start this machine's RabbitMQ application and Redis server, so they run only
where both are local and controllable (as on the development and CI machines).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time

import openai
import pytest

BENCH = "llamagate-benchmark"
USER = [{"role": "user", "content": "hi"}]
REDIS_START = ("redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save '' --appendonly no "
               "--dir /tmp --logfile /tmp/llamagate-test-redis.log")

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("rabbitmqctl") or not shutil.which("redis-server")
    or "LLAMAGATE_TEST_BROKER_URL" in os.environ or "LLAMAGATE_TEST_REDIS_URL" in os.environ,
    reason="needs local RabbitMQ and Redis that this test may restart")


@pytest.fixture
def client(make_stack, make_openai_client, purge_queue):
    purge_queue(BENCH)
    stack = make_stack(LLAMAGATE_BENCHMARK_STEP_MS="5")
    stack.start_worker(BENCH)
    stack.start_web()
    stack.wait_ready(BENCH, timeout=60)
    return make_openai_client(stack, max_retries=0, timeout=30)


def ask(client) -> str:
    return client.chat.completions.create(model=BENCH, messages=USER, max_tokens=3).choices[0].message.content


def recovers(client, within: float) -> float:
    """Seconds until a request succeeds again (fails the test after `within`)."""
    started = time.monotonic()
    while True:
        try:
            assert ask(client) == " The quick brown"
            return time.monotonic() - started
        except openai.APIError:
            if time.monotonic() - started > within:
                raise
            time.sleep(0.5)


def assert_outage_then_recovery(client, stop, start) -> None:
    """Requests get a 503 within seconds while a service is down, and succeed again once it is back."""
    assert ask(client) == " The quick brown"
    stop()
    try:
        started = time.monotonic()
        with pytest.raises(openai.InternalServerError) as caught:
            ask(client)
        assert caught.value.status_code == 503 and time.monotonic() - started < 5
    finally:
        start()
    assert recovers(client, within=30) < 30


def test_rabbitmq_restart(client):
    assert_outage_then_recovery(
        client,
        stop=lambda: subprocess.run(["rabbitmqctl", "stop_app"], check=True, capture_output=True, timeout=120),
        start=lambda: subprocess.run(["rabbitmqctl", "start_app"], check=True, capture_output=True, timeout=120))


def test_redis_restart(client):
    assert_outage_then_recovery(
        client,
        stop=lambda: subprocess.run(["redis-cli", "shutdown", "nosave"], capture_output=True, timeout=30),
        start=lambda: subprocess.run(REDIS_START, shell=True, check=True, timeout=30))
