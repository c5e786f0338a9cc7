import pytest

from api.rate_limits.headers import duration, rate_limit_headers
from api.rate_limits.limiter import LimitState, Limits


@pytest.mark.parametrize("ms, text", [(0, "0s"), (-5, "0s"), (250, "250ms"), (1000, "1s"), (12_500, "12.5s"),
                                      (60_000, "1m0s"), (390_200, "6m30.2s")])
def test_durations_read_like_openais(ms, text):
    assert duration(ms) == text


def test_headers_describe_both_budgets():
    state = LimitState(Limits(60, 100_000, 10), remaining_requests=59, remaining_tokens=99_000,
                       reset_requests_ms=1_001, reset_tokens_ms=60_000)
    assert rate_limit_headers(state) == {
        "X-RateLimit-Limit": "60", "X-RateLimit-Remaining": "59", "X-RateLimit-Reset": "2",
        "x-ratelimit-limit-requests": "60", "x-ratelimit-remaining-requests": "59",
        "x-ratelimit-reset-requests": "1.001s", "x-ratelimit-limit-tokens": "100000",
        "x-ratelimit-remaining-tokens": "99000", "x-ratelimit-reset-tokens": "1m0s"}
