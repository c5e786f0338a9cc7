"""The operators' API: `POST /admin/credits` grants credits. Off unless LLAMAGATE_ADMIN_TOKEN is set."""

from __future__ import annotations

import hmac

from flask import Blueprint, Response, current_app, request

from api.accounts import users
from api.accounts.money import dollars_to_micros, format_micros
from api.accounts.payments import OperatorGrants
from api.json_body import json_body, json_response
from shared.errors import AuthenticationError, InvalidRequestError, NotFoundError

blueprint = Blueprint("admin", __name__, url_prefix="/admin")


@blueprint.before_request
def require_admin_token() -> None:
    expected = current_app.extensions["llamagate"].settings.admin_token
    if not expected:
        raise NotFoundError("Unknown request URL. Please check the URL and method.")
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), expected.encode()):
        raise AuthenticationError("A valid admin token is required.", code="invalid_admin_token")


@blueprint.post("/credits")
def grant_credits() -> Response:
    """Body: {"email": ..., "amount": "5.00", "note": "..."} (amount in US dollars, as a string)."""
    body = json_body()
    email, amount, note = body.get("email"), body.get("amount"), body.get("note") or "granted by an operator"
    if not isinstance(email, str) or not email:
        raise InvalidRequestError("`email` is required.", param="email")
    if not isinstance(amount, (str, int)) or isinstance(amount, bool):
        raise InvalidRequestError("`amount` must be a string of US dollars, such as \"5.00\".", param="amount")
    try:
        micros = dollars_to_micros(str(amount))
    except ValueError as exc:
        raise InvalidRequestError(str(exc), param="amount") from None
    if micros <= 0:
        raise InvalidRequestError("`amount` must be positive.", param="amount")
    runtime = current_app.extensions["llamagate"]
    user = users.find_user(runtime.db, email)
    if user is None:
        raise NotFoundError(f"No user with the email {email!r}.", param="email", code="user_not_found")
    balance = OperatorGrants(runtime.db).grant(user.id, micros, str(note)[:500])
    return json_response({"email": user.email, "granted": format_micros(micros), "balance": format_micros(balance),
                          "balance_micros": balance})
