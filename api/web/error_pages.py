"""Errors as HTML pages for people, while API clients keep OpenAI's JSON errors.

api.errors registers the JSON handlers for the whole app. Each is wrapped here: a request for
an API path (or the demo's stream, read by JavaScript) still gets JSON, anything else a page.
"""

from __future__ import annotations

import functools
import logging
from typing import Callable

from flask import Flask, Response, render_template, request
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException

from shared.errors import LlamaGateError

log = logging.getLogger(__name__)

# Paths whose callers are programs: they get the JSON error body.
API_PATHS = ("/v1", "/admin", "/healthz", "/readyz", "/metrics", "/demo")


def wants_json() -> bool:
    path = request.path
    return any(path == prefix or path.startswith(prefix + "/") for prefix in API_PATHS)


def register_error_pages(app: Flask) -> None:
    """Wrap every app-wide error handler registered so far (call after api.errors')."""
    for code, handlers in app.error_handler_spec[None].items():
        for exception_class, json_handler in list(handlers.items()):
            handlers[exception_class] = _page_unless_api(json_handler)


def _page_unless_api(json_handler: Callable[[Exception], Response]) -> Callable[[Exception], Response]:
    @functools.wraps(json_handler)
    def handle(error: Exception):
        if wants_json():
            return json_handler(error)
        return error_page(error)

    return handle


def error_page(error: Exception) -> tuple[str, int]:
    if isinstance(error, CSRFError):
        status, title = 400, "This form has expired"
        message = ("For your safety, forms work only for a while after the page loads. Go back, reload the page "
                   "and try again.")
    elif isinstance(error, HTTPException):
        status, title = error.code or 500, error.name
        message = {404: "There is no page at this address.",
                   405: "This page cannot be used that way."}.get(status, error.description or "")
    elif isinstance(error, LlamaGateError):
        status, title, message = error.status, "Something went wrong", error.message
    else:
        log.exception("unhandled error on a web page")
        status, title = 500, "Something went wrong on our side"
        message = "Please try again in a moment."
    return render_template("error.html", status=status, title=title, message=message), status
