"""Metering one API request: its rate-limit lease and credit reservation at admission, and its
settlement (charge, token correction, lease release) at the end.

Who pays what:
- A request that completes pays for its usage as the worker reported it (streamed or not alike).
- A request whose client leaves pays for what the worker generated before the cancel took effect:
  the worker records that usage in Redis when it drops the job, and a greenlet waits for it.
- A request that fails (no worker, a worker crash, a timeout, a queue error) pays nothing.
Settlement is idempotent per request id (see `api.accounts.credits.settle`). Rate-limit token
estimates are corrected to the same usage the request is charged for.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Optional

import gevent
import redis

from api.accounts import credits
from api.accounts.api_keys import KeyIdentity
from api.accounts.credits import Usage
from api.rate_limits.limiter import Lease, Limits
from broker.naming import final_usage_key
from shared.errors import InsufficientCreditsError
from shared.registry import ModelSpec
from shared.settings import Settings

log = logging.getLogger(__name__)

FINAL_USAGE_WAIT = 10.0  # seconds to wait for a cancelled job's usage from its worker
FINAL_USAGE_POLL = 0.2
RESERVATION_GRACE = 120.0  # seconds a reservation outlives its job's deadline before it is swept


def limits_for(identity: KeyIdentity, settings: Settings) -> Limits:
    """The key's own limits where it has them, the deployment's defaults elsewhere."""
    return Limits(requests=identity.rate_limit_requests or settings.rate_limit_requests,
                  tokens=identity.rate_limit_tokens or settings.rate_limit_tokens,
                  concurrency=identity.rate_limit_concurrency or settings.rate_limit_concurrency)


class MeteredRequest:
    """One request's hold on its key's rate limits and its account's credits."""

    def __init__(self, runtime, identity: KeyIdentity, request_id: str, spec: ModelSpec, endpoint: str):
        self.runtime = runtime
        self.identity = identity
        self.request_id = request_id
        self.spec = spec
        self.endpoint = endpoint
        self.started_at = time.monotonic()
        self.lease: Optional[Lease] = None
        self.reserved = False
        self.prompt_tokens = 0

    def precheck(self) -> None:
        """429 now if the key could not be admitted even for one token (before work that admission
        cannot size yet, such as fetching the request's images)."""
        self.runtime.limiter.precheck(self.identity.fingerprint, limits_for(self.identity, self.runtime.settings))

    def admit(self, prompt_tokens: int, max_completion_tokens: int, lifetime: float) -> None:
        """Take the rate limits (429), then reserve the worst-case cost (402)."""
        self.prompt_tokens = prompt_tokens
        self.lease = self.runtime.limiter.admit(self.identity.fingerprint, self.request_id,
                                                prompt_tokens + max_completion_tokens,
                                                limits_for(self.identity, self.runtime.settings))
        amount = self.spec.pricing.cost_micros(prompt_tokens, max_completion_tokens)
        try:
            credits.reserve(self.runtime.db, request_id=self.request_id, user_id=self.identity.user_id,
                            api_key_id=self.identity.key_id, model=self.spec.id, amount_micros=amount,
                            expires_in=lifetime + RESERVATION_GRACE)
        except InsufficientCreditsError:
            self.lease.finish(0)  # counted as a request, but it used no tokens
            raise
        self.reserved = True

    def release(self) -> None:
        """The request is over for its client: free its concurrency slot now."""
        if self.lease is not None:
            self.lease.release()

    def settle(self, usage: Optional[Usage], status: str) -> None:
        """Charge `usage` (None: nothing), release the reservation, correct the token estimate."""
        usage = usage or Usage()
        if self.lease is not None:
            self.lease.finish(usage.prompt_tokens + usage.completion_tokens)
        if not self.reserved:
            return
        cost = self.spec.pricing.cost_micros(usage.prompt_tokens, usage.completion_tokens)
        latency_ms = int((time.monotonic() - self.started_at) * 1000)
        try:
            credits.settle(self.runtime.db, request_id=self.request_id, usage=usage, cost_micros=cost,
                           endpoint=self.endpoint, status=status, latency_ms=latency_ms)
        except Exception:
            # The reservation stays and is released by the sweeper; never fail the response for it.
            log.exception("settlement failed", extra={"request_id": self.request_id})

    def settle_after_cancel(self, seen: Usage) -> None:
        """Settle a request whose client left, in the background: the worker's own count of what it
        generated arrives a step after the cancel; `seen` (what reached this process) is the fallback."""
        gevent.spawn(self._await_final_usage_then_settle, seen)

    def _await_final_usage_then_settle(self, seen: Usage) -> None:
        deadline = time.monotonic() + FINAL_USAGE_WAIT
        while time.monotonic() < deadline:
            try:
                raw = self.runtime.redis.get(final_usage_key(self.request_id))
            except redis.RedisError:
                raw = None
            if raw:
                data = json.loads(raw)
                self.settle(Usage(int(data.get("prompt_tokens", 0)), int(data.get("completion_tokens", 0))),
                            "client_disconnected")
                return
            gevent.sleep(FINAL_USAGE_POLL)
        self.settle(seen, "client_disconnected")


def usage_from(report: Optional[dict]) -> Optional[Usage]:
    if not report:
        return None
    return Usage(int(report.get("prompt_tokens", 0)), int(report.get("completion_tokens", 0)))


def sweep_expired_reservations(runtime) -> int:
    """Release reservations whose web process died before settling (no charge: the client got no
    answer). Returns how many were released."""
    released = 0
    for request_id in credits.expired_reservations(runtime.db):
        credits.settle(runtime.db, request_id=request_id, usage=Usage(), cost_micros=0, endpoint="unknown",
                       status="expired", latency_ms=0)
        released += 1
    if released:
        log.warning("released expired reservations", extra={"count": released})
    return released
