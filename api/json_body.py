"""Reading a JSON request body and writing JSON responses, with OpenAI-shaped failures."""

from __future__ import annotations

from typing import Any

import orjson
from flask import Response, request

from shared.errors import InvalidRequestError


def json_body() -> Any:
    """The decoded body of a JSON request; 400 for a wrong content type or malformed JSON."""
    if request.mimetype != "application/json":
        raise InvalidRequestError(
            f"Invalid Content-Type header ({request.mimetype or 'none'}); expected application/json.")
    data = request.get_data(cache=False)  # the size limit (413) is enforced here by Flask
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        raise InvalidRequestError(
            "We could not parse the JSON body of your request. The body must be valid JSON.") from None


def json_response(payload: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(payload), status=status, mimetype="application/json")
