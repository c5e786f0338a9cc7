"""The rate limiter's scripts against a real Redis: exact limits, leases, corrections, failures."""

from __future__ import annotations

import threading
import time
import uuid

import pytest
import redis

from api.rate_limits.limiter import Limits, RateLimiter, redis_keys
from shared.errors import RateLimitError, ServiceUnavailableError

LIMITS = Limits(requests=5, tokens=1000, concurrency=3)


@pytest.fixture
def limiter(redis_client):
    return RateLimiter(redis_client, window_seconds=2.0, lease_seconds=30.0)


@pytest.fixture
def key() -> str:
    return uuid.uuid4().hex  # a key nobody else uses


def admit(limiter, key, tokens=10, limits=LIMITS, release=True):
    lease = limiter.admit(key, uuid.uuid4().hex, tokens, limits)
    if release:
        lease.release()
    return lease


def refused(limiter, key, tokens=10, limits=LIMITS) -> RateLimitError:
    with pytest.raises(RateLimitError) as caught:
        limiter.admit(key, uuid.uuid4().hex, tokens, limits)
    return caught.value


def test_requests_are_counted_in_a_sliding_window(limiter, key):
    states = [admit(limiter, key).state for _ in range(5)]
    assert [s.remaining_requests for s in states] == [4, 3, 2, 1, 0]
    error = refused(limiter, key)
    assert (error.status, error.type, error.code) == (429, "requests", "rate_limit_exceeded")
    assert 1000 <= int(error.headers["retry-after-ms"]) <= 2000
    assert error.headers["retry-after"] == "2"
    time.sleep(int(error.headers["retry-after-ms"]) / 1000 + 0.05)
    assert admit(limiter, key).state.remaining_requests == 4  # the window has moved on


def test_tokens_are_limited_and_the_wait_is_until_enough_leave(limiter, key):
    admit(limiter, key, tokens=600)
    error = refused(limiter, key, tokens=500)
    assert error.type == "tokens" and "400 remain" in error.message
    assert 1000 <= int(error.headers["retry-after-ms"]) <= 2000
    assert admit(limiter, key, tokens=400).state.remaining_tokens == 0


def test_a_request_that_can_never_fit_says_so_and_must_not_be_retried(limiter, key):
    error = refused(limiter, key, tokens=1001)
    assert error.type == "tokens" and error.headers["x-should-retry"] == "false"
    assert "retry-after" not in error.headers
    assert admit(limiter, key).state.remaining_requests == 4  # it took nothing


def test_the_real_usage_replaces_the_estimate(limiter, key):
    lease = admit(limiter, key, tokens=900)
    refused(limiter, key, tokens=200)
    lease.correct(50)
    assert admit(limiter, key, tokens=200).state.remaining_tokens == 1000 - 50 - 200


def test_concurrency_is_a_lease_per_request(limiter, key):
    leases = [admit(limiter, key, release=False) for _ in range(3)]
    error = refused(limiter, key)
    assert error.type == "concurrency" and error.headers["retry-after-ms"] == "1000"
    leases[0].release()
    leases[0].release()  # idempotent: frees one slot, not two
    admit(limiter, key, release=False)
    refused(limiter, key)


def test_a_refusal_takes_nothing_from_the_other_budgets(limiter, key):
    for _ in range(3):
        admit(limiter, key, release=False)
    for _ in range(10):
        assert refused(limiter, key, tokens=100).type == "concurrency"
    state = limiter.peek(key, LIMITS)
    assert (state.remaining_requests, state.remaining_tokens) == (2, 970)


def test_leases_of_a_dead_process_expire(redis_client, key):
    short = RateLimiter(redis_client, window_seconds=60, lease_seconds=0.3)
    for _ in range(3):
        short.admit(key, uuid.uuid4().hex, 1, LIMITS)  # never released: the process "died"
    with pytest.raises(RateLimitError):
        short.admit(key, uuid.uuid4().hex, 1, LIMITS)
    time.sleep(0.4)
    short.admit(key, uuid.uuid4().hex, 1, LIMITS)


def test_renewed_leases_outlive_their_first_term(redis_client, key):
    short = RateLimiter(redis_client, window_seconds=60, lease_seconds=0.5)
    for _ in range(3):
        short.admit(key, uuid.uuid4().hex, 1, LIMITS)
    for _ in range(4):
        time.sleep(0.2)
        assert short.renew_running() == 3
    with pytest.raises(RateLimitError):
        short.admit(key, uuid.uuid4().hex, 1, LIMITS)


def test_no_overshoot_when_many_requests_race(redis_url, key):
    limits = Limits(requests=25, tokens=10**6, concurrency=100)
    admitted, refusals = [], []

    def attempt() -> None:
        own = RateLimiter(redis.Redis.from_url(redis_url), window_seconds=60, lease_seconds=30)
        for _ in range(10):
            try:
                admitted.append(own.admit(key, uuid.uuid4().hex, 1, limits))
            except RateLimitError as exc:
                refusals.append(exc.type)

    threads = [threading.Thread(target=attempt) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(admitted) == 25 and refusals == ["requests"] * 55


def test_keys_do_not_share_budgets(limiter, key):
    for _ in range(5):
        admit(limiter, key)
    refused(limiter, key)
    assert admit(limiter, key + "-other").state.remaining_requests == 4


def test_an_unreachable_redis_refuses_requests_with_503():
    dead = RateLimiter(redis.Redis(port=1, socket_connect_timeout=0.2), window_seconds=60, lease_seconds=30)
    with pytest.raises(ServiceUnavailableError) as caught:
        dead.admit(1, "r", 1, LIMITS)
    assert caught.value.status == 503
    assert dead.peek(1, LIMITS) is None


def test_finishing_releases_and_corrects_even_after_redis_lost_its_scripts(limiter, key, redis_client):
    lease = limiter.admit(key, uuid.uuid4().hex, 900, LIMITS)
    redis_client.script_flush()  # as after a Redis restart
    lease.finish(100)
    state = limiter.peek(key, LIMITS)
    assert state.remaining_tokens == 900
    for _ in range(3):
        admit(limiter, key, release=False)  # the finished lease's slot is free again


def test_a_long_window_is_searched_for_when_enough_tokens_free_up(limiter, key):
    limits = Limits(requests=1000, tokens=1500, concurrency=1000)
    for _ in range(150):
        admit(limiter, key, tokens=10, limits=limits)
    error = refused(limiter, key, tokens=1010, limits=limits)  # 101 of the 150 entries must leave
    assert error.type == "tokens" and 1 <= int(error.headers["retry-after-ms"]) <= 2000


def test_the_tokens_total_is_rebuilt_if_it_was_lost(limiter, key, redis_client):
    admit(limiter, key, tokens=600)
    redis_client.delete(redis_keys(key)[3])
    assert limiter.peek(key, LIMITS).remaining_tokens == 400
    assert refused(limiter, key, tokens=500).type == "tokens"


def test_a_precheck_refuses_as_admission_would_and_takes_nothing(limiter, key):
    limiter.precheck(key, LIMITS)  # a fresh key passes
    leases = [admit(limiter, key, release=False) for _ in range(3)]
    with pytest.raises(RateLimitError) as caught:
        limiter.precheck(key, LIMITS)
    assert caught.value.type == "concurrency"
    leases[0].release()
    limiter.precheck(key, LIMITS)
    state = limiter.peek(key, LIMITS)
    assert (state.remaining_requests, state.remaining_tokens) == (2, 970)  # the prechecks took nothing
    admit(limiter, key), admit(limiter, key)
    with pytest.raises(RateLimitError) as caught:
        limiter.precheck(key, LIMITS)
    assert caught.value.type == "requests" and int(caught.value.headers["retry-after-ms"]) > 0


def test_a_precheck_refuses_a_key_without_a_token_left(limiter, key):
    admit(limiter, key, tokens=1000)
    with pytest.raises(RateLimitError) as caught:
        limiter.precheck(key, LIMITS)
    assert caught.value.type == "tokens"


def test_a_precheck_leaves_an_unreachable_redis_to_admission(key):
    dead = RateLimiter(redis.Redis(port=1, socket_connect_timeout=0.2), window_seconds=2.0, lease_seconds=30.0)
    dead.precheck(key, LIMITS)  # no error here: admit() answers 503
    with pytest.raises(ServiceUnavailableError):
        dead.admit(key, uuid.uuid4().hex, 1, LIMITS)
