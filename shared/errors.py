"""One error hierarchy: each error knows its HTTP status and its OpenAI `type` and `code`.

The API turns any of them into `{"error": {"message", "type", "param", "code"}}`; workers send
the same fields inside an error event, so a failure reads the same wherever it happened.
"""

from __future__ import annotations

from typing import Any


class LlamaGateError(Exception):
    status: int = 500
    type: str = "server_error"
    code: str | None = None

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None,
                 status: int | None = None, type_: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        self.headers: dict[str, str] = {}  # extra response headers, such as Retry-After
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        if type_ is not None:
            self.type = type_

    def to_dict(self) -> dict[str, Any]:
        """The OpenAI error body."""
        return {"error": {"message": self.message, "type": self.type,
                          "param": self.param, "code": self.code}}

    @classmethod
    def from_dict(cls, body: dict[str, Any], status: int = 500) -> "LlamaGateError":
        """Rebuild an error sent as an event by a worker (its class is not preserved, its fields are)."""
        error = cls(str(body.get("message") or "internal error"), param=body.get("param"),
                    code=body.get("code"), status=status)
        error.type = str(body.get("type") or cls.type)
        return error


class InvalidRequestError(LlamaGateError):
    status = 400
    type = "invalid_request_error"


class ContextLengthExceededError(InvalidRequestError):
    code = "context_length_exceeded"


class AuthenticationError(LlamaGateError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class InsufficientCreditsError(LlamaGateError):
    """The account's credits cannot cover the request (OpenAI's `insufficient_quota`)."""

    status = 402
    type = "insufficient_quota"
    code = "insufficient_credits"


class PermissionDeniedError(LlamaGateError):
    status = 403
    type = "invalid_request_error"
    code = "permission_denied"


class NotFoundError(LlamaGateError):
    status = 404
    type = "invalid_request_error"


class ModelNotFoundError(NotFoundError):
    code = "model_not_found"

    def __init__(self, model: str):
        super().__init__(f"The model `{model}` does not exist or you do not have access to it.",
                         param="model")


class RequestTooLargeError(InvalidRequestError):
    status = 413
    code = "request_too_large"


class RateLimitError(LlamaGateError):
    """429; `type` names the limit (requests, tokens, concurrency), as OpenAI's do."""

    status = 429
    type = "requests"
    code = "rate_limit_exceeded"


class ServerError(LlamaGateError):
    status = 500
    type = "server_error"


class ServiceUnavailableError(LlamaGateError):
    status = 503
    type = "server_error"
    code = "service_unavailable"


class ModelUnavailableError(ServiceUnavailableError):
    code = "model_unavailable"


class RequestTimeoutError(ServiceUnavailableError):
    """A request that could not be served in time (queued too long, or generation ran past its deadline)."""

    code = "timeout"
