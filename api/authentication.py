"""Who is calling the API: `Authorization: Bearer llg_sk_...`, checked on every /v1 request."""

from __future__ import annotations

from typing import Optional

from api.accounts.api_keys import KEY_PREFIX, KeyIdentity, lookup_key
from shared.errors import AuthenticationError

MISSING = ("You didn't provide an API key. You need to provide your API key in an Authorization header "
           "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY). You can create one on your dashboard.")


def authenticate(runtime, authorization: Optional[str]) -> KeyIdentity:
    """The caller's identity; raises AuthenticationError (401, `invalid_api_key`) otherwise."""
    scheme, _, secret = (authorization or "").strip().partition(" ")
    secret = secret.strip()
    if scheme.lower() != "bearer" or not secret:
        raise AuthenticationError(MISSING)
    identity = lookup_key(runtime.db, runtime.redis, secret)
    if identity is None:
        raise AuthenticationError(f"Incorrect API key provided: {redact(secret)}. You can find your API keys "
                                  "on your dashboard.")
    return identity


def redact(secret: str) -> str:
    """Enough of a key to recognise it, never enough to use it (OpenAI shows the same)."""
    if len(secret) <= 12:
        return "*" * len(secret)
    shown = secret[:len(KEY_PREFIX) + 3] if secret.startswith(KEY_PREFIX) else secret[:3]
    return f"{shown}{'*' * 8}{secret[-4:]}"
