"""Fixed-window counters in Redis: login throttling and the homepage demo's per-IP limit.

A window is named by its number (time // length), so every web process counts into the same
key, and the key expires by itself once its window is over.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass
from typing import Callable, Optional

import redis


@dataclass(frozen=True)
class Window:
    name: str
    limit: int
    seconds: int


@dataclass(frozen=True)
class Refusal:
    """A limit was reached; the caller may try again after `retry_after` seconds."""

    retry_after: int

    @property
    def minutes(self) -> int:
        return max(1, math.ceil(self.retry_after / 60))


class WindowCounter:
    def __init__(self, client: redis.Redis, clock: Callable[[], float] = time.time):
        self.client = client
        self.clock = clock

    def _key(self, window: Window, subject: str) -> tuple[str, int]:
        now = self.clock()
        number = int(now // window.seconds)
        retry_after = math.ceil((number + 1) * window.seconds - now)
        return f"llg:throttle:{window.name}:{_digest(subject)}:{number}", retry_after

    def hit(self, window: Window, subject: str) -> Optional[Refusal]:
        """Count one event; a Refusal if this one went over the limit."""
        key, retry_after = self._key(window, subject)
        with self.client.pipeline() as pipe:  # MULTI: the key never exists without its expiry
            count, _ = pipe.incr(key).expire(key, window.seconds + 1).execute()
        return Refusal(retry_after) if count > window.limit else None

    def check(self, window: Window, subject: str) -> Optional[Refusal]:
        """A Refusal if the limit is already reached, without counting."""
        key, retry_after = self._key(window, subject)
        count = int(self.client.get(key) or 0)
        return Refusal(retry_after) if count >= window.limit else None

    def reset(self, window: Window, subject: str) -> None:
        self.client.delete(self._key(window, subject)[0])


def _digest(subject: str) -> str:
    """Keys name a hash, not the email or address itself."""
    return hashlib.sha256(subject.encode()).hexdigest()[:32]


LOGIN_FAILURES_PER_EMAIL = Window("login-email", limit=10, seconds=15 * 60)
LOGIN_FAILURES_PER_IP = Window("login-ip", limit=50, seconds=15 * 60)


class LoginThrottle:
    """At most 10 failed logins per email and 50 per client address in 15 minutes."""

    def __init__(self, counter: WindowCounter):
        self.counter = counter

    def check(self, email: str, address: str) -> Optional[Refusal]:
        return (self.counter.check(LOGIN_FAILURES_PER_EMAIL, email)
                or self.counter.check(LOGIN_FAILURES_PER_IP, address))

    def failed(self, email: str, address: str) -> None:
        self.counter.hit(LOGIN_FAILURES_PER_EMAIL, email)
        self.counter.hit(LOGIN_FAILURES_PER_IP, address)

    def succeeded(self, email: str) -> None:
        """The owner got in: their address's count stays, the email's starts again."""
        self.counter.reset(LOGIN_FAILURES_PER_EMAIL, email)


def demo_window(requests_per_minute: int) -> Window:
    return Window("demo-ip", limit=requests_per_minute, seconds=60)
