"""Sign up, log in, log out: email and password, with throttled logins."""

from __future__ import annotations

from typing import Optional
from urllib.parse import urlsplit

from flask import Blueprint, Response, current_app, flash, redirect, render_template, request, url_for

from api.accounts import users
from api.web import sessions
from api.web.forms import FormError, read_credentials
from api.web.pages import signup_credit_micros
from api.web.throttle import LoginThrottle, Window, WindowCounter

blueprint = Blueprint("auth", __name__)

SIGNUPS_PER_IP = Window("signup-ip", limit=10, seconds=60 * 60)  # each sign-up comes with free credit


def _runtime():
    return current_app.extensions["llamagate"]


def _client_address() -> str:
    return request.remote_addr or "unknown"


def _safe_next(target: Optional[str]) -> str:
    """Where to go after logging in: a path on this site, never another site."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        parts = urlsplit(target)
        if not parts.scheme and not parts.netloc:
            return target
    return url_for("dashboard.overview")


@blueprint.route("/signup", methods=["GET", "POST"])
def signup():
    if request.method == "GET":
        if sessions.current_user() is not None:
            return redirect(url_for("dashboard.overview"))
        return render_template("signup.html", signup_credit=signup_credit_micros())
    email = request.form.get("email", "")
    try:
        email, password = read_credentials(request.form.to_dict())
        refusal = WindowCounter(_runtime().redis).hit(SIGNUPS_PER_IP, _client_address())
        if refusal:
            return render_template("signup.html", email=email, signup_credit=signup_credit_micros(),
                                   error=f"Too many sign-ups from your network. Please try again in "
                                         f"{refusal.minutes} minutes."), 429
        user = users.create_user(_runtime().db, email, password, starting_credit_micros=signup_credit_micros())
    except (FormError, users.AccountError) as exc:
        return render_template("signup.html", email=email, error=str(exc),
                               signup_credit=signup_credit_micros()), 400
    sessions.sign_in(user)
    flash("Welcome to LlamaGate! Create an API key below to make your first request.", "success")
    return redirect(url_for("dashboard.overview"))


@blueprint.route("/login", methods=["GET", "POST"])
def login():
    next_url = request.values.get("next")
    if request.method == "GET":
        if sessions.current_user() is not None:
            return redirect(_safe_next(next_url))
        return render_template("login.html", next=next_url)
    email = request.form.get("email", "")
    throttle = LoginThrottle(WindowCounter(_runtime().redis))
    try:
        email, password = read_credentials(request.form.to_dict())
    except FormError as exc:
        return render_template("login.html", email=email, next=next_url, error=str(exc)), 400
    refusal = throttle.check(users.normalize_email(email), _client_address())
    if refusal:
        return render_template("login.html", email=email, next=next_url,
                               error=f"Too many failed attempts. Please try again in {refusal.minutes} "
                                     f"minute{'s' if refusal.minutes != 1 else ''}."), 429
    user = users.authenticate(_runtime().db, email, password)
    if user is None:
        throttle.failed(users.normalize_email(email), _client_address())
        return render_template("login.html", email=email, next=next_url,
                               error="The email or password is not right."), 401
    throttle.succeeded(users.normalize_email(email))
    sessions.sign_in(user)
    return redirect(_safe_next(next_url))


@blueprint.post("/logout")
def logout() -> Response:
    sessions.sign_out()
    flash("You are logged out.", "info")
    return redirect(url_for("pages.home"))
