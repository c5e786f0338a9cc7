"""POST /v1/chat/completions"""

from __future__ import annotations

from flask import Response, current_app, g, request

from api.chat_completions import start_chat_completion
from api.client_connection import disconnect_probe
from api.json_body import json_body, json_response
from api.job_stream import ClientDisconnected
from api.schemas.chat import parse_chat_completion
from api.v1 import blueprint, meter_request

CLIENT_CLOSED_REQUEST = 499  # nginx's status for a client that left before the answer


@blueprint.post("/chat/completions")
def create_chat_completion() -> Response:
    params = parse_chat_completion(json_body())
    runtime = current_app.extensions["llamagate"]
    run = start_chat_completion(
        runtime, params, g.request_id, disconnect_probe(request.environ),
        meter_for=lambda spec: meter_request(spec, "chat.completions"))
    try:
        if not params.stream:
            return json_response(run.result())
        run.wait_started()
    except ClientDisconnected:
        return Response(status=CLIENT_CLOSED_REQUEST)
    return Response(run.sse(), mimetype="text/event-stream",
                    headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
