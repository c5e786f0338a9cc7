"""One handler turns any failure into OpenAI's error body: `{"error": {message, type, param, code}}`."""

from __future__ import annotations

import logging

from flask import Flask, Response
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from api.json_body import json_response
from shared.errors import InvalidRequestError, LlamaGateError, NotFoundError, RequestTooLargeError, ServerError

log = logging.getLogger(__name__)


def error_response(error: LlamaGateError) -> Response:
    response = json_response(error.to_dict(), error.status)
    if error.status in (400, 401, 402, 403, 404, 413):
        response.headers["x-should-retry"] = "false"  # retrying cannot help; the SDK honours this
    response.headers.update(error.headers)
    return response


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(LlamaGateError)
    def handle_llamagate_error(error: LlamaGateError) -> Response:
        return error_response(error)

    @app.errorhandler(RequestEntityTooLarge)
    def handle_too_large(error: RequestEntityTooLarge) -> Response:
        limit = app.config.get("MAX_CONTENT_LENGTH")
        return error_response(RequestTooLargeError(f"The request body is larger than the limit of {limit} bytes."))

    @app.errorhandler(HTTPException)
    def handle_http_error(error: HTTPException) -> Response:
        if error.code == 404:
            return error_response(NotFoundError("Unknown request URL. Please check the URL and method."))
        failure = InvalidRequestError(error.description or error.name, status=error.code or 400)
        return error_response(failure)

    @app.errorhandler(Exception)
    def handle_unexpected(error: Exception) -> Response:
        log.exception("unhandled error")
        return error_response(ServerError("The server had an error while processing your request."))
