"""Who is signed in to the website.

The signed cookie carries the user's id and a random sign-in id; Redis holds the sign-in id
while it is valid. Signing out deletes it there, so a copy of the old cookie stops working at
once on every web process (a signed cookie alone would stay valid until it expired).
"""

from __future__ import annotations

import functools
import secrets
from datetime import timedelta
from typing import Callable, Optional

from flask import current_app, g, redirect, request, session, url_for

from api.accounts import users
from api.store.models import User

SIGN_IN_LIFETIME = timedelta(days=30)


def _record_key(sign_in_id: str) -> str:
    return f"llg:web:signin:{sign_in_id}"


def sign_in(user: User) -> None:
    """Start a fresh session for `user` (a new id each time: a planted cookie is never promoted)."""
    runtime = current_app.extensions["llamagate"]
    sign_in_id = secrets.token_urlsafe(32)
    runtime.redis.set(_record_key(sign_in_id), str(user.id), ex=int(SIGN_IN_LIFETIME.total_seconds()))
    session.clear()
    session.permanent = True
    session["user_id"] = user.id
    session["sign_in_id"] = sign_in_id
    g.user_id = user.id
    g.pop("user", None)


def sign_out() -> None:
    sign_in_id = session.get("sign_in_id")
    if sign_in_id:
        current_app.extensions["llamagate"].redis.delete(_record_key(sign_in_id))
    session.clear()
    g.user_id = None
    g.pop("user", None)


def signed_in_user_id() -> Optional[int]:
    """The id of the signed-in user, or None; checks the sign-in is still live (once per request)."""
    if "user_id" not in g:
        g.user_id = None
        user_id, sign_in_id = session.get("user_id"), session.get("sign_in_id")
        if user_id is not None and sign_in_id:
            stored = current_app.extensions["llamagate"].redis.get(_record_key(sign_in_id))
            if stored is not None and stored.decode() == str(user_id):
                g.user_id = user_id
    return g.user_id


def current_user() -> Optional[User]:
    """The signed-in user's record, or None."""
    if "user" not in g:
        user_id = signed_in_user_id()
        g.user = users.get_user(current_app.extensions["llamagate"].db, user_id) if user_id else None
    return g.user


def login_required(view: Callable) -> Callable:
    """Send visitors who are not signed in to the login page, and back here afterwards."""

    @functools.wraps(view)
    def wrapped(*args, **kwargs):
        if current_user() is None:
            # Back to this page after logging in; a form's target is not a page to land on.
            target = request.full_path.rstrip("?") if request.method == "GET" else url_for("dashboard.overview")
            return redirect(url_for("auth.login", next=target))
        return view(*args, **kwargs)

    return wrapped
