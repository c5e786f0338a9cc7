"""The website: public pages, sign-up and login, the dashboard, and the homepage demo.

Server-rendered with Jinja (api/templates), one stylesheet and a little JavaScript (api/static),
no build step. `init_app` wires it into the application made by `api.app.create_app`.
"""

from __future__ import annotations

from datetime import timedelta

import redis
from flask import Flask, Response, request
from flask_wtf.csrf import CSRFProtect
from werkzeug.middleware.proxy_fix import ProxyFix

from api.accounts.money import dollars_to_micros
from api.web import auth, dashboard, demo, pages, sessions, template_filters
from api.web.cookies import SessionCookies, load_secret_key
from api.web.error_pages import register_error_pages, wants_json
from shared.settings import Settings

csrf = CSRFProtect()

# Pages load scripts and styles only from this site: an injected <script> would not run.
CONTENT_SECURITY_POLICY = ("default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
                           "connect-src 'self'; frame-ancestors 'none'; base-uri 'self'; form-action 'self'")


def init_app(app: Flask, settings: Settings, api_blueprints: tuple = ()) -> None:
    """Register the website on `app`; call after the API's blueprints and error handlers.

    `api_blueprints` take bearer API keys, not cookies, so CSRF protection skips them."""
    dollars_to_micros(settings.signup_credit_usd)  # a malformed amount fails here, not on every page
    if settings.trusted_proxies > 0:
        hops = settings.trusted_proxies
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops, x_port=hops)
    app.config.update(
        SECRET_KEY=load_secret_key(settings),
        SESSION_COOKIE_NAME="llamagate_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        PERMANENT_SESSION_LIFETIME=sessions.SIGN_IN_LIFETIME,
        WTF_CSRF_TIME_LIMIT=int(timedelta(hours=12).total_seconds()),
    )
    app.session_interface = SessionCookies()
    csrf.init_app(app)
    for blueprint in api_blueprints:
        csrf.exempt(blueprint)
    template_filters.register(app)
    for blueprint in (pages.blueprint, auth.blueprint, dashboard.blueprint, demo.blueprint):
        app.register_blueprint(blueprint)
    app.context_processor(_navigation_state)
    app.after_request(_protect_pages)
    register_error_pages(app)


def _navigation_state() -> dict:
    """What the navigation bar needs on every page; an error page renders even with Redis away."""
    try:
        return {"signed_in": sessions.signed_in_user_id() is not None}
    except redis.RedisError:
        return {"signed_in": False}


def _protect_pages(response: Response) -> Response:
    """Browser hardening for HTML pages; signed-in pages are never cached."""
    if wants_json() or request.path.startswith("/static/"):
        return response
    response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    if request.blueprint == dashboard.blueprint.name:
        response.headers.setdefault("Cache-Control", "no-store")
    return response
