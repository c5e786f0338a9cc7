"""The session cookie: signed with one secret that every web process shares, and `Secure`
whenever the request came over https."""

from __future__ import annotations

import os
import secrets
import tempfile
from pathlib import Path

from flask import Flask, request
from flask.sessions import SecureCookieSessionInterface

from shared.settings import Settings

SECRET_KEY_FILE = "secret_key"


def load_secret_key(settings: Settings) -> str:
    """The configured secret, or one made once and kept in the cache folder (mode 0600).

    Every gunicorn process must sign with the same key, or a cookie set by one would be
    rejected by the next; the file is created atomically, so racing processes agree on it."""
    if settings.secret_key:
        return settings.secret_key
    path = Path(settings.cache_dir) / SECRET_KEY_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor, draft = tempfile.mkstemp(dir=path.parent, prefix=".secret_key-")  # mode 0600
        try:
            with os.fdopen(descriptor, "w") as file:
                file.write(secrets.token_urlsafe(48))
            os.link(draft, path)  # fails if another process got there first: theirs wins
        except FileExistsError:
            pass
        finally:
            os.unlink(draft)
    secret = path.read_text().strip()
    if not secret:
        raise RuntimeError(f"{path} is empty; delete it or set LLAMAGATE_SECRET_KEY")
    return secret


class SessionCookies(SecureCookieSessionInterface):
    """Flask's signed-cookie session, marked `Secure` exactly when the request is https
    (behind a proxy, ProxyFix makes `request.is_secure` follow X-Forwarded-Proto)."""

    def get_cookie_secure(self, app: Flask) -> bool:
        return request.is_secure or super().get_cookie_secure(app)
