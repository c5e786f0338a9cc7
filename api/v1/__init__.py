"""The OpenAI-compatible API, version 1. Every route needs an API key."""

from flask import Blueprint, current_app, g, request

from api.authentication import authenticate

blueprint = Blueprint("v1", __name__, url_prefix="/v1")


@blueprint.before_request
def require_api_key() -> None:
    g.identity = authenticate(current_app.extensions["llamagate"], request.headers.get("Authorization"))


from api.v1 import chat, models  # noqa: E402,F401  (routes register themselves on the blueprint)
