"""The public pages: the homepage (with the "Try it" demo), the quick-start docs, pricing."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Optional

from flask import Blueprint, current_app, render_template, request

from api.accounts.money import dollars_to_micros
from api.web.model_catalogue import model_rows
from shared.image_tokens import UnsupportedVisionModel
from shared.registry import ModelSpec

log = logging.getLogger(__name__)

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


@dataclass(frozen=True)
class RateLimitSummary:
    """The deployment's default per-key limits, in the words the docs use."""

    requests: int
    tokens: int
    concurrency: int
    window_seconds: float

    @property
    def window_text(self) -> str:
        return "minute" if self.window_seconds == 60 else f"{self.window_seconds:g} seconds"

    @property
    def per_window(self) -> str:
        return f"per {self.window_text}"


def default_rate_limits() -> RateLimitSummary:
    settings = current_app.extensions["llamagate"].settings
    return RateLimitSummary(settings.rate_limit_requests, settings.rate_limit_tokens,
                            settings.rate_limit_concurrency, settings.rate_limit_window)


@blueprint.get("/docs")
def docs() -> str:
    settings = current_app.extensions["llamagate"].settings
    images = {"max_per_request": settings.max_images_per_request, "max_bytes": settings.image_max_bytes,
              "max_pixels": settings.image_max_pixels, "fetch": settings.image_fetch_enabled}
    return render_template("docs.html", base_url=api_base_url(), model=settings.demo_model,
                           signup_credit=signup_credit_micros(), limits=default_rate_limits(), images=images)


@blueprint.get("/pricing")
def pricing() -> str:
    runtime = current_app.extensions["llamagate"]
    serving = runtime.directory.served_models() if runtime.directory.fresh else set()
    return render_template("pricing.html", models=model_rows(runtime.registry, serving, image_tokens),
                           signup_credit=signup_credit_micros())


def image_tokens(spec: ModelSpec) -> Optional[str]:
    """What an image costs on a vision model, from its image-token rule (None where unreadable)."""
    try:
        return current_app.extensions["llamagate"].image_token_rule(spec).describe()
    except (OSError, UnsupportedVisionModel) as exc:
        log.warning("image-token rule unavailable", extra={"model": spec.id, "error": repr(exc)})
        return None
