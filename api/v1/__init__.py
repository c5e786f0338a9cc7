"""The OpenAI-compatible API, version 1. Every route needs an API key; every answer to a known key
carries its rate-limit headers (streams too: headers leave before the first byte)."""

from flask import Blueprint, Response, current_app, g, request

from api.authentication import authenticate
from api.metering import MeteredRequest, limits_for
from api.rate_limits.headers import rate_limit_headers
from shared.registry import ModelSpec

blueprint = Blueprint("v1", __name__, url_prefix="/v1")


@blueprint.before_request
def require_api_key() -> None:
    g.identity = authenticate(current_app.extensions["llamagate"], request.headers.get("Authorization"))


@blueprint.after_request
def add_rate_limit_headers(response: Response) -> Response:
    identity = g.get("identity")
    if identity is None:
        return response
    runtime = current_app.extensions["llamagate"]
    meter = g.get("meter")
    if meter is not None and meter.lease is not None:
        state = meter.lease.state
    else:  # not admitted (GET /v1/models, a refused body, a 429): report without taking anything
        state = runtime.limiter.peek(identity.fingerprint, limits_for(identity, runtime.settings))
    if state is not None:
        for name, value in rate_limit_headers(state).items():
            response.headers.setdefault(name, value)
    return response


def meter_request(spec: ModelSpec, endpoint: str) -> MeteredRequest:
    """The metering of the current request, kept where the response's headers are made."""
    runtime = current_app.extensions["llamagate"]
    g.meter = MeteredRequest(runtime, g.identity, g.request_id, spec, endpoint)
    return g.meter


from api.v1 import chat, embeddings, models  # noqa: E402,F401  (routes register themselves on the blueprint)
