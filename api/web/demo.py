"""The homepage's "Try it" box: a real streamed completion from the demo model, free.

No API key is involved: the request is served with no charge and limited per client address
instead. Errors are OpenAI-shaped JSON (the page's script shows their message).
"""

from __future__ import annotations

from flask import Blueprint, Response, current_app, g, request

from api.chat_completions import start_chat_completion
from api.client_connection import disconnect_probe
from api.errors import error_response
from api.job_stream import ClientDisconnected
from api.schemas.chat import parse_chat_completion
from api.web.forms import FormError, read_demo_prompt
from api.web.throttle import WindowCounter, demo_window
from shared.errors import InvalidRequestError, RateLimitError

blueprint = Blueprint("demo", __name__, url_prefix="/demo")

CLIENT_CLOSED_REQUEST = 499


@blueprint.post("/chat")
def stream_demo_completion() -> Response:
    runtime = current_app.extensions["llamagate"]
    settings = runtime.settings
    try:
        prompt = read_demo_prompt(request.get_json(silent=True))
    except FormError as exc:
        raise InvalidRequestError(str(exc), param="prompt") from None
    refusal = WindowCounter(runtime.redis).hit(demo_window(settings.demo_requests_per_minute),
                                               request.remote_addr or "unknown")
    if refusal:
        response = error_response(RateLimitError(
            f"The demo allows {settings.demo_requests_per_minute} requests a minute; please try again in "
            f"{refusal.retry_after} seconds, or sign up for an API key."))
        response.headers["Retry-After"] = str(refusal.retry_after)
        return response
    params = parse_chat_completion({"model": settings.demo_model, "stream": True,
                                    "max_tokens": settings.demo_max_tokens,
                                    "messages": [{"role": "user", "content": prompt}]})
    run = start_chat_completion(runtime, params, g.request_id, disconnect_probe(request.environ), meter_for=None)
    try:
        run.wait_started()
    except ClientDisconnected:
        return Response(status=CLIENT_CLOSED_REQUEST)
    return Response(run.sse(), mimetype="text/event-stream",
                    headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
