"""Per-key rate limits, exact across every web process: a sliding window of requests and of
tokens, and a lease per running request, all checked and taken in one atomic Redis script.

Windows are logs, not counters: a key can never have more than its limit in any window, at a
boundary or not. A request refused by one limit takes nothing from the others. A lease expires
unless its web process renews it, so a crashed process frees its keys' slots by itself.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import redis

from shared.errors import RateLimitError, ServiceUnavailableError

log = logging.getLogger(__name__)

_SCRIPTS = Path(__file__).parent
CONCURRENCY_RETRY_MS = 1000  # a slot frees when a running request ends, which nobody can foresee


@dataclass(frozen=True)
class Limits:
    requests: int  # per window
    tokens: int  # per window
    concurrency: int


@dataclass(frozen=True)
class LimitState:
    """A key's budgets as of one request; what the rate-limit headers report."""

    limits: Limits
    remaining_requests: int
    remaining_tokens: int
    reset_requests_ms: int  # until the requests budget is whole again
    reset_tokens_ms: int  # until the tokens budget is whole again


def redis_keys(key: str) -> list[str]:
    """The requests log, the tokens log, the concurrency leases and the tokens total of an API key
    (named by its fingerprint, unique even across deployments that share one Redis)."""
    tag = f"{{{key}}}"  # one hash slot per key, should Redis ever be a cluster
    return [f"llg:rl:{tag}:requests", f"llg:rl:{tag}:tokens", f"llg:rl:{tag}:running", f"llg:rl:{tag}:tokens-total"]


def _script(name: str, shared: bool = False) -> str:
    text = (_SCRIPTS / name).read_text()
    return (_SCRIPTS / "window.lua").read_text() + text if shared else text


class Lease:
    """One admitted request's hold on its key's budgets."""

    def __init__(self, limiter: "RateLimiter", key: str, request_id: str, tokens: int, state: LimitState):
        self.limiter = limiter
        self.key = key
        self.request_id = request_id
        self.tokens = tokens
        self.state = state
        self.released = False
        self.corrected = False

    def release(self) -> None:
        """Free the concurrency slot (idempotent)."""
        if not self.released:
            self.released = True
            self.limiter.release(self)

    def correct(self, actual_tokens: int) -> None:
        """Replace the token estimate by the real usage (idempotent)."""
        if not self.corrected:
            self.corrected = True
            self.limiter.correct(self, actual_tokens)

    def finish(self, actual_tokens: int) -> None:
        """Release and correct, in one round trip where both are still to do."""
        if self.released or self.corrected:
            self.release()
            self.correct(actual_tokens)
            return
        self.released = self.corrected = True
        self.limiter.finish(self, actual_tokens)


class RateLimiter:
    def __init__(self, client: redis.Redis, window_seconds: float, lease_seconds: float):
        self.client = client
        self.window_ms = int(window_seconds * 1000)
        self.lease_ms = int(lease_seconds * 1000)
        self._admit = client.register_script(_script("admit.lua", shared=True))
        self._correct = client.register_script(_script("correct.lua"))
        self._peek = client.register_script(_script("peek.lua", shared=True))
        self._renew = client.register_script(_script("renew.lua"))
        self.running: dict[str, Lease] = {}  # this process's leases, renewed until released

    def admit(self, key: str, request_id: str, tokens: int, limits: Limits) -> Lease:
        """Take a request and its estimated tokens from the key's budgets, or raise RateLimitError
        (429, with Retry-After) naming the limit. Fails closed: 503 while Redis is unreachable."""
        try:
            state = self._judge(key, request_id, tokens, limits, dry_run=False)
        except redis.RedisError as exc:
            log.error("rate limiter unavailable; refusing the request", extra={"error": repr(exc)})
            raise ServiceUnavailableError("The rate limiter is unavailable; please retry shortly.") from None
        lease = Lease(self, key, request_id, tokens, state)
        self.running[request_id] = lease
        return lease

    def precheck(self, key: str, limits: Limits) -> None:
        """Raise the RateLimitError that admitting a one-token request would raise now, taking
        nothing: for work done before admission (fetching images) that a key over its limits must
        not get. Redis being unreachable is left to admit(), which fails closed."""
        try:
            self._judge(key, "", 1, limits, dry_run=True)
        except redis.RedisError:
            pass

    def _judge(self, key: str, request_id: str, tokens: int, limits: Limits, dry_run: bool) -> LimitState:
        verdict, requests_left, tokens_left, reset_requests, reset_tokens, retry_ms, running = self._admit(
            keys=redis_keys(key), args=[self.window_ms, limits.requests, limits.tokens, limits.concurrency,
                                      request_id, tokens, self.lease_ms, "1" if dry_run else "0"])
        verdict = verdict.decode() if isinstance(verdict, bytes) else verdict
        state = LimitState(limits, int(requests_left), int(tokens_left), int(reset_requests), int(reset_tokens))
        if verdict != "ok":
            raise refusal(verdict, state, tokens, int(retry_ms), int(running))
        return state

    def peek(self, key: str, limits: Limits) -> Optional[LimitState]:
        """The key's budgets without taking anything; None if Redis cannot say."""
        try:
            requests, tokens, reset_requests, reset_tokens = self._peek(keys=redis_keys(key), args=[self.window_ms])
        except redis.RedisError:
            return None
        return LimitState(limits, max(0, limits.requests - int(requests)), max(0, limits.tokens - int(tokens)),
                          int(reset_requests), int(reset_tokens))

    def release(self, lease: Lease) -> None:
        self.running.pop(lease.request_id, None)
        try:
            self.client.zrem(redis_keys(lease.key)[2], lease.request_id)
        except redis.RedisError as exc:
            log.warning("could not release a concurrency lease; it expires by itself",
                        extra={"error": repr(exc), "lease_seconds": self.lease_ms / 1000})

    def correct(self, lease: Lease, actual_tokens: int) -> None:
        if actual_tokens == lease.tokens:
            return
        try:
            self._correct(keys=redis_keys(lease.key), args=[lease.request_id, lease.tokens, max(0, actual_tokens)])
        except redis.RedisError as exc:
            log.warning("could not correct a token estimate", extra={"error": repr(exc)})

    def finish(self, lease: Lease, actual_tokens: int) -> None:
        self.running.pop(lease.request_id, None)
        keys = redis_keys(lease.key)
        correction = [lease.request_id, lease.tokens, max(0, actual_tokens)]
        try:
            # EVALSHA, not the Script object: a pipeline would spend a round trip on SCRIPT EXISTS.
            pipe = self.client.pipeline(transaction=False)
            pipe.zrem(keys[2], lease.request_id)
            if actual_tokens != lease.tokens:
                pipe.evalsha(self._correct.sha, len(keys), *keys, *correction)
            results = pipe.execute(raise_on_error=False)
            if any(isinstance(result, redis.exceptions.NoScriptError) for result in results):
                self._correct(keys=keys, args=correction)  # Redis restarted and lost its scripts
        except redis.RedisError as exc:
            log.warning("could not finish a rate-limit lease; it expires by itself", extra={"error": repr(exc)})

    def renew_running(self) -> int:
        """Extend the leases of this process's running requests; call well within lease_seconds."""
        leases = list(self.running.values())
        if not leases:
            return 0
        try:
            return int(self._renew(keys=[redis_keys(lease.key)[2] for lease in leases],
                                   args=[self.lease_ms, *(lease.request_id for lease in leases)]))
        except redis.RedisError as exc:
            log.warning("could not renew concurrency leases", extra={"error": repr(exc)})
            return 0


def refusal(verdict: str, state: LimitState, tokens: int, retry_ms: int, running: int) -> RateLimitError:
    limits = state.limits
    if verdict == "never":
        error = RateLimitError(
            f"Request too large: it needs up to {tokens} tokens (prompt + max_tokens), more than this key's "
            f"limit of {limits.tokens} tokens per window. Lower max_tokens or shorten the prompt; retrying "
            "cannot help.", type_="tokens")
        error.headers["x-should-retry"] = "false"
        return error
    if verdict == "requests":
        message = f"Rate limit reached: {limits.requests} requests per window. Retry in {retry_ms / 1000:.1f}s."
    elif verdict == "tokens":
        message = (f"Rate limit reached: {limits.tokens} tokens per window; this request needs up to {tokens} "
                   f"and {state.remaining_tokens} remain. Retry in {retry_ms / 1000:.1f}s.")
    else:
        retry_ms = CONCURRENCY_RETRY_MS
        message = (f"Too many concurrent requests: {running} of at most {limits.concurrency} are running on this "
                   "key. Retry when one has finished.")
    error = RateLimitError(message, type_=verdict)
    error.headers["retry-after"] = str(-(-retry_ms // 1000))
    error.headers["retry-after-ms"] = str(retry_ms)
    return error
