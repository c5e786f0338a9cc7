"""One error hierarchy: each error knows its status and OpenAI type/code, and survives a trip as an event."""

from __future__ import annotations

import pytest

from shared.errors import (AuthenticationError, ContextLengthExceededError, InvalidRequestError, LlamaGateError,
                           ModelNotFoundError, ModelUnavailableError, NotFoundError, RateLimitError,
                           RequestTimeoutError, RequestTooLargeError, ServerError, ServiceUnavailableError)


@pytest.mark.parametrize("error, status, type_, code", [
    (InvalidRequestError("x"), 400, "invalid_request_error", None),
    (ContextLengthExceededError("x"), 400, "invalid_request_error", "context_length_exceeded"),
    (AuthenticationError("x"), 401, "authentication_error", "invalid_api_key"),
    (NotFoundError("x"), 404, "invalid_request_error", None),
    (ModelNotFoundError("gpt-9"), 404, "invalid_request_error", "model_not_found"),
    (RequestTooLargeError("x"), 413, "invalid_request_error", "request_too_large"),
    (RateLimitError("x"), 429, "requests", "rate_limit_exceeded"),
    (ServerError("x"), 500, "server_error", None),
    (ServiceUnavailableError("x"), 503, "server_error", "service_unavailable"),
    (ModelUnavailableError("x"), 503, "server_error", "model_unavailable"),
    (RequestTimeoutError("x"), 503, "server_error", "timeout"),
])
def test_status_type_and_code(error, status, type_, code):
    assert (error.status, error.type, error.code) == (status, type_, code)
    assert isinstance(error, LlamaGateError)


def test_body_is_openais_error_object():
    error = InvalidRequestError("Invalid 'n'.", param="n")
    assert error.to_dict() == {"error": {"message": "Invalid 'n'.", "type": "invalid_request_error",
                                         "param": "n", "code": None}}


def test_model_not_found_names_the_model_and_param():
    error = ModelNotFoundError("gpt-9")
    assert "`gpt-9`" in error.message and error.param == "model"


def test_code_and_status_can_be_given_per_instance_without_changing_the_class():
    error = InvalidRequestError("x", code="custom", status=422)
    assert (error.status, error.code) == (422, "custom")
    assert (InvalidRequestError.status, InvalidRequestError.code) == (400, None)


def test_error_rebuilt_from_an_event_keeps_its_fields():
    sent = ContextLengthExceededError("too long", param="messages")
    rebuilt = LlamaGateError.from_dict(sent.to_dict()["error"], status=sent.status)
    assert rebuilt.to_dict() == sent.to_dict()
    assert rebuilt.status == 400


def test_error_rebuilt_from_an_empty_body_is_a_generic_server_error():
    rebuilt = LlamaGateError.from_dict({})
    assert (rebuilt.status, rebuilt.type, rebuilt.message) == (500, "server_error", "internal error")
