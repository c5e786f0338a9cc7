"""The rate-limit headers of a response.

- `X-RateLimit-Limit`: the key's requests per window (60 per minute by default).
- `X-RateLimit-Remaining`: requests left in the current window, after this one.
- `X-RateLimit-Reset`: whole seconds until that budget is whole again (the newest counted request
  leaves the window).
OpenAI's own headers report both budgets: `x-ratelimit-{limit,remaining,reset}-{requests,tokens}`,
resets as durations such as `1s`, `250ms` or `1m0s`.
"""

from __future__ import annotations

from api.rate_limits.limiter import LimitState


def rate_limit_headers(state: LimitState) -> dict[str, str]:
    return {
        "X-RateLimit-Limit": str(state.limits.requests),
        "X-RateLimit-Remaining": str(state.remaining_requests),
        "X-RateLimit-Reset": str(-(-state.reset_requests_ms // 1000)),
        "x-ratelimit-limit-requests": str(state.limits.requests),
        "x-ratelimit-remaining-requests": str(state.remaining_requests),
        "x-ratelimit-reset-requests": duration(state.reset_requests_ms),
        "x-ratelimit-limit-tokens": str(state.limits.tokens),
        "x-ratelimit-remaining-tokens": str(state.remaining_tokens),
        "x-ratelimit-reset-tokens": duration(state.reset_tokens_ms),
    }


def duration(ms: int) -> str:
    """Milliseconds as OpenAI writes durations: `0s`, `250ms`, `12.5s`, `1m0s`, `6m30.2s`."""
    if ms <= 0:
        return "0s"
    if ms < 1000:
        return f"{ms}ms"
    minutes, rest = divmod(ms, 60_000)
    seconds = f"{rest / 1000:.3f}".rstrip("0").rstrip(".")
    return f"{minutes}m{seconds}s" if minutes else f"{seconds}s"
