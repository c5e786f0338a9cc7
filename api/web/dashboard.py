"""The signed-in user's dashboard: API keys, credit balance and ledger, usage."""

from __future__ import annotations

from flask import (Blueprint, Response, current_app, flash, make_response, redirect, render_template, request,
                   url_for)

from api.accounts import api_keys, credits, usage
from api.web import sessions
from api.web.forms import FormError, read_key_name
from api.web.pages import api_base_url, default_rate_limits
from api.web.usage_chart import layout

blueprint = Blueprint("dashboard", __name__, url_prefix="/dashboard")

CHART_DAYS = 14
RECENT_REQUESTS = 20
LEDGER_ENTRIES = 20


def _runtime():
    return current_app.extensions["llamagate"]


@blueprint.get("")
@sessions.login_required
def overview() -> str:
    return _render_dashboard()


@blueprint.post("/keys")
@sessions.login_required
def create_key():
    try:
        name = read_key_name(request.form.to_dict())
    except FormError as exc:
        return _render_dashboard(key_error=str(exc)), 400
    runtime = _runtime()
    created = api_keys.create_key(runtime.db, runtime.redis, sessions.current_user().id, name)
    # The only time the whole key exists outside its owner's hands: shown in this response,
    # never stored (only its hash is) and never cached by the browser or a proxy.
    response = make_response(render_template("key_created.html", key=created.record, secret=created.secret,
                                             base_url=api_base_url(), model=runtime.settings.demo_model))
    response.headers["Cache-Control"] = "no-store"
    return response


@blueprint.post("/keys/<int:key_id>/revoke")
@sessions.login_required
def revoke_key(key_id: int) -> Response:
    runtime = _runtime()
    if api_keys.revoke_key(runtime.db, runtime.redis, sessions.current_user().id, key_id):
        flash("The key is revoked: requests made with it are refused from now on.", "success")
    else:
        flash("That key was already revoked, or is not yours.", "error")
    return redirect(url_for("dashboard.overview"))


def _render_dashboard(key_error: str = "") -> str:
    runtime = _runtime()
    user = sessions.current_user()
    keys = api_keys.list_keys(runtime.db, user.id, include_revoked=True)
    recent = usage.recent_requests(runtime.db, user.id, limit=RECENT_REQUESTS)
    active_keys = [key for key in keys if key.revoked_at is None]
    return render_template(
        "dashboard.html", user=user, key_error=key_error, active_keys=active_keys,
        limits=default_rate_limits(),
        has_custom_limits=any(key.rate_limit_requests or key.rate_limit_tokens or key.rate_limit_concurrency
                              for key in active_keys),
        key_names={key.id: key.name for key in keys},
        balance=credits.get_balance(runtime.db, user.id),
        ledger=credits.ledger_entries(runtime.db, user.id, limit=LEDGER_ENTRIES),
        chart=layout(usage.daily_usage(runtime.db, user.id, days=CHART_DAYS)),
        recent=recent, base_url=api_base_url())
