"""Password hashing with argon2id (a slow hash: right for logins, wrong for per-request API keys).

A hash takes tens of milliseconds of CPU. In a gevent web process it runs on the hub's thread
pool (argon2's C code releases the GIL), so the process's other requests and streams go on.
"""

from __future__ import annotations

from typing import Callable, TypeVar

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_hasher = PasswordHasher()
# Verified against when the email is unknown, so a login takes as long either way.
_DUMMY_HASH = _hasher.hash("not a real password")

MIN_PASSWORD_LENGTH = 8


T = TypeVar("T")


def _off_the_event_loop(work: Callable[[], T]) -> T:
    try:
        from gevent import get_hub, monkey
    except ImportError:
        return work()
    if not monkey.is_module_patched("socket"):
        return work()  # not a gevent server (the CLI, tests): nothing to keep responsive
    return get_hub().threadpool.apply(work)


def hash_password(password: str) -> str:
    return _off_the_event_loop(lambda: _hasher.hash(password))


def verify_password(password_hash: str | None, password: str) -> bool:
    def verify() -> bool:
        try:
            return _hasher.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
        except (VerificationError, InvalidHashError):
            return False

    return _off_the_event_loop(verify)
