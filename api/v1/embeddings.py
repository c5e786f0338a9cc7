"""POST /v1/embeddings"""

from __future__ import annotations

from flask import Response, current_app, g, request

from api.client_connection import disconnect_probe
from api.embedding_format import embedding_list
from api.embeddings import create_embeddings
from api.job_stream import ClientDisconnected
from api.json_body import json_body, json_response
from api.schemas.embeddings import parse_embeddings
from api.v1 import blueprint, meter_request

CLIENT_CLOSED_REQUEST = 499  # nginx's status for a client that left before the answer


@blueprint.post("/embeddings")
def create_embedding() -> Response:
    params = parse_embeddings(json_body())
    runtime = current_app.extensions["llamagate"]
    try:
        result = create_embeddings(runtime, params, g.request_id, disconnect_probe(request.environ),
                                   meter_for=lambda spec: meter_request(spec, "embeddings"))
    except ClientDisconnected:
        return Response(status=CLIENT_CLOSED_REQUEST)
    return json_response(embedding_list(result.model, result.vectors, result.usage, params.encoding_format))
