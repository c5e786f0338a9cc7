"""Charging one request: reserve its worst-case cost at admission, settle its real usage at the end.

Who pays what:
- A request that completes pays for its usage as the worker reported it (streamed or not alike).
- A request whose client leaves pays for what the worker generated before the cancel took effect:
  the worker records that usage in Redis when it drops the job, and a greenlet waits for it.
- A request that fails (no worker, a worker crash, a timeout, a queue error) pays nothing.
Settlement is idempotent per request id (see `api.accounts.credits.settle`).
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
from broker.naming import final_usage_key
from shared.registry import ModelSpec

log = logging.getLogger(__name__)

FINAL_USAGE_WAIT = 10.0  # seconds to wait for a cancelled job's usage from its worker
FINAL_USAGE_POLL = 0.2
RESERVATION_GRACE = 120.0  # seconds a reservation outlives its job's deadline before it is swept


class RequestCharge:
    """The billing side of one request, from its reservation to its settlement."""

    def __init__(self, runtime, identity: KeyIdentity, request_id: str, spec: ModelSpec, endpoint: str):
        self.runtime = runtime
        self.identity = identity
        self.request_id = request_id
        self.spec = spec
        self.endpoint = endpoint
        self.started_at = time.monotonic()
        self.reserved = False
        self.prompt_tokens = 0

    def reserve(self, prompt_tokens: int, max_completion_tokens: int, lifetime: float) -> None:
        """Hold the worst-case cost; raises InsufficientCreditsError (402) when it is not covered."""
        self.prompt_tokens = prompt_tokens
        amount = self.spec.pricing.cost_micros(prompt_tokens, max_completion_tokens)
        credits.reserve(self.runtime.db, request_id=self.request_id, user_id=self.identity.user_id,
                        api_key_id=self.identity.key_id, model=self.spec.id, amount_micros=amount,
                        expires_in=lifetime + RESERVATION_GRACE)
        self.reserved = True

    def settle(self, usage: Optional[Usage], status: str) -> None:
        """Charge `usage` (None: nothing) and release the reservation."""
        if not self.reserved:
            return
        usage = usage or Usage()
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
