"""GET /v1/models and /v1/models/{id}: the models a live worker serves right now."""

from __future__ import annotations

from flask import Response, current_app

from api.json_body import json_response
from api.v1 import blueprint
from shared.errors import ModelNotFoundError
from shared.registry import ModelSpec


def _model_object(spec: ModelSpec) -> dict:
    return {"id": spec.id, "object": "model", "created": spec.created, "owned_by": spec.owned_by}


def _served_specs() -> list[ModelSpec]:
    runtime = current_app.extensions["llamagate"]
    served = runtime.directory.served_models()
    return [spec for spec in runtime.registry if spec.id in served]


@blueprint.get("/models")
def list_models() -> Response:
    return json_response({"object": "list", "data": [_model_object(s) for s in _served_specs()]})


@blueprint.get("/models/<path:model_id>")
def retrieve_model(model_id: str) -> Response:
    for spec in _served_specs():
        if spec.id == model_id:
            return json_response(_model_object(spec))
    raise ModelNotFoundError(model_id)
