"""API keys: `llg_sk_` and 43 random URL-safe characters (256 bits), stored only as SHA-256.

A fast hash is right here: the key is random and long, so it cannot be guessed from its hash,
and every API request must look it up. Lookups go through a Redis cache; revoking writes a
tombstone into that cache, so a revoked key stops working at once on every web process.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Optional

import redis
from sqlalchemy import bindparam, or_, select, update

from api.store.db import Database
from api.store.models import ApiKey, utcnow

log = logging.getLogger(__name__)

KEY_PREFIX = "llg_sk_"
KEY_FORMAT = re.compile(r"^llg_sk_[A-Za-z0-9_-]{32,128}$")
VISIBLE_PREFIX_LENGTH = len(KEY_PREFIX) + 6
CACHE_TTL = 300  # seconds a known key stays cached
NEGATIVE_CACHE_TTL = 30  # seconds an unknown key stays cached as unknown
TOMBSTONE_TTL = 2 * CACHE_TTL  # outlives any cache fill that raced the revocation
_UNKNOWN = b"-"
LAST_USED_RESOLUTION = timedelta(minutes=1)


@dataclass(frozen=True)
class KeyIdentity:
    """Who an API request is from, and the key's own rate limits (None: the defaults)."""

    key_id: int
    user_id: int
    rate_limit_requests: Optional[int] = None
    rate_limit_tokens: Optional[int] = None
    rate_limit_concurrency: Optional[int] = None
    fingerprint: str = ""  # a prefix of the key's hash: names its rate-limit state in Redis


@dataclass(frozen=True)
class CreatedKey:
    record: ApiKey
    secret: str  # the whole key: shown once, never stored


def generate_secret() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def cache_key(key_hash: str) -> str:
    return f"llg:apikey:{key_hash}"


def create_key(db: Database, cache: Optional[redis.Redis], user_id: int, name: str, *,
               rate_limit_requests: Optional[int] = None, rate_limit_tokens: Optional[int] = None,
               rate_limit_concurrency: Optional[int] = None) -> CreatedKey:
    secret = generate_secret()
    key_hash = hash_secret(secret)
    with db.transaction() as session:
        record = ApiKey(user_id=user_id, name=(name.strip() or "Untitled key")[:100],
                        prefix=secret[:VISIBLE_PREFIX_LENGTH], key_hash=key_hash,
                        rate_limit_requests=rate_limit_requests, rate_limit_tokens=rate_limit_tokens,
                        rate_limit_concurrency=rate_limit_concurrency)
        session.add(record)
        session.flush()
    if cache is not None:
        try:
            cache.delete(cache_key(key_hash))  # in case someone probed this exact key before
        except redis.RedisError:
            pass
    return CreatedKey(record, secret)


def list_keys(db: Database, user_id: int, include_revoked: bool = False) -> list[ApiKey]:
    with db.transaction() as session:
        query = select(ApiKey).where(ApiKey.user_id == user_id).order_by(ApiKey.created_at.desc(), ApiKey.id.desc())
        if not include_revoked:
            query = query.where(ApiKey.revoked_at.is_(None))
        return list(session.scalars(query))


def revoke_key(db: Database, cache: Optional[redis.Redis], user_id: int, key_id: int) -> bool:
    """Revoke one of the user's keys; True if it was active. Effective at once everywhere."""
    with db.transaction() as session:
        record = session.scalar(select(ApiKey).where(ApiKey.id == key_id, ApiKey.user_id == user_id,
                                                     ApiKey.revoked_at.is_(None)).with_for_update())
        if record is None:
            return False
        record.revoked_at = utcnow()
        key_hash = record.key_hash
    if cache is not None:
        try:
            cache.set(cache_key(key_hash), _UNKNOWN, ex=TOMBSTONE_TTL)
        except redis.RedisError:
            # With Redis unreachable no web process can read a stale entry either; entries
            # written before this revocation expire within CACHE_TTL.
            log.error("could not write the revocation into the key cache", extra={"key_id": key_id})
    return True


def lookup_key(db: Database, cache: Optional[redis.Redis], secret: str) -> Optional[KeyIdentity]:
    """The identity behind an API key, or None if it is malformed, unknown or revoked."""
    if not KEY_FORMAT.match(secret):
        return None
    key_hash = hash_secret(secret)
    cached = _cache_get(cache, key_hash)
    if cached == _UNKNOWN:
        return None
    if cached is not None:
        data = json.loads(cached)
        return KeyIdentity(data["k"], data["u"], *data.get("l", ()), fingerprint=key_hash[:32])
    with db.transaction() as session:
        row = session.execute(select(ApiKey.id, ApiKey.user_id, ApiKey.rate_limit_requests, ApiKey.rate_limit_tokens,
                                     ApiKey.rate_limit_concurrency).where(
            ApiKey.key_hash == key_hash, ApiKey.revoked_at.is_(None))).first()
    identity = KeyIdentity(*row, fingerprint=key_hash[:32]) if row else None
    value = json.dumps({"k": identity.key_id, "u": identity.user_id, "l": [
        identity.rate_limit_requests, identity.rate_limit_tokens, identity.rate_limit_concurrency]}) \
        if identity else _UNKNOWN
    # NX: never overwrite a tombstone that a revocation wrote after our database read.
    _cache_set(cache, key_hash, value, CACHE_TTL if identity else NEGATIVE_CACHE_TTL)
    return identity


_TOUCH = (update(ApiKey).where(ApiKey.id == bindparam("key_id"),
                               or_(ApiKey.last_used_at.is_(None), ApiKey.last_used_at < bindparam("stale_before")))
          .values(last_used_at=bindparam("now")))


def touch_last_used(connection, key_id: int, when: datetime) -> None:
    """Record a key's use, at most once a minute (so busy keys do not rewrite their row on every
    request); called inside the settlement transaction, so it costs no extra commit."""
    connection.execute(_TOUCH, {"key_id": key_id, "stale_before": when - LAST_USED_RESOLUTION, "now": when})


def _cache_get(cache: Optional[redis.Redis], key_hash: str) -> Optional[bytes]:
    if cache is None:
        return None
    try:
        return cache.get(cache_key(key_hash))
    except redis.RedisError:
        return None  # the database still answers


def _cache_set(cache: Optional[redis.Redis], key_hash: str, value, ttl: int) -> None:
    if cache is None:
        return
    try:
        cache.set(cache_key(key_hash), value, ex=ttl, nx=True)
    except redis.RedisError:
        pass
