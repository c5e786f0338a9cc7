"""The public pages: the homepage (with the "Try it" demo), the quick-start docs, pricing."""

from __future__ import annotations

from flask import Blueprint, current_app, render_template, request

from api.accounts.money import dollars_to_micros
from api.web.model_catalogue import model_rows

blueprint = Blueprint("pages", __name__)


def api_base_url() -> str:
    """This deployment's API address as a client should write it (behind a proxy too)."""
    return request.url_root.rstrip("/") + "/v1"


def signup_credit_micros() -> int:
    return dollars_to_micros(current_app.extensions["llamagate"].settings.signup_credit_usd)


@blueprint.get("/")
def home() -> str:
    settings = current_app.extensions["llamagate"].settings
    return render_template("home.html", base_url=api_base_url(), demo_model=settings.demo_model,
                           signup_credit=signup_credit_micros())


@blueprint.get("/docs")
def docs() -> str:
    settings = current_app.extensions["llamagate"].settings
    return render_template("docs.html", base_url=api_base_url(), model=settings.demo_model,
                           signup_credit=signup_credit_micros())


@blueprint.get("/pricing")
def pricing() -> str:
    runtime = current_app.extensions["llamagate"]
    serving = runtime.directory.served_models() if runtime.directory.fresh else set()
    return render_template("pricing.html", models=model_rows(runtime.registry, serving),
                           signup_credit=signup_credit_micros())
