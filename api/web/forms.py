"""What the website's forms and the demo accept, validated with marshmallow.

Each `read_*` returns the cleaned values or raises FormError with a message fit for the page.
The account rules themselves (a valid email, a long enough password) live in api.accounts.
"""

from __future__ import annotations

from typing import Any, Mapping

from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate

MAX_PASSWORD_LENGTH = 1024  # argon2 takes any length; a megabyte "password" is only a way to burn CPU
MAX_KEY_NAME_LENGTH = 100
MAX_DEMO_PROMPT_LENGTH = 2000


class FormError(ValueError):
    """The message is safe to show on the page."""


class CredentialsForm(Schema):
    class Meta:
        unknown = EXCLUDE  # the CSRF token and the submit button ride along

    email = fields.String(required=True, validate=validate.Length(min=1, max=320),
                          error_messages={"required": "Please enter your email address."})
    password = fields.String(required=True, validate=validate.Length(min=1, max=MAX_PASSWORD_LENGTH),
                             error_messages={"required": "Please enter your password."})


class KeyNameForm(Schema):
    class Meta:
        unknown = EXCLUDE

    name = fields.String(load_default="", validate=validate.Length(max=MAX_KEY_NAME_LENGTH))


class DemoPromptSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    prompt = fields.String(required=True, validate=validate.Length(min=1, max=MAX_DEMO_PROMPT_LENGTH))


_MESSAGES = {
    "email": "Please enter your email address.",
    "password": f"Please enter a password (at most {MAX_PASSWORD_LENGTH} characters).",
    "name": f"Key names have at most {MAX_KEY_NAME_LENGTH} characters.",
    "prompt": f"Please type a prompt of 1 to {MAX_DEMO_PROMPT_LENGTH} characters.",
}


def _load(schema: Schema, data: Any) -> dict[str, Any]:
    if not isinstance(data, Mapping):
        raise FormError("Expected a form or a JSON object.")
    try:
        return schema.load(dict(data))
    except ValidationError as exc:
        field = next(iter(exc.normalized_messages()), "")
        raise FormError(_MESSAGES.get(field, "Please check the form and try again.")) from None


def read_credentials(form: Mapping[str, Any]) -> tuple[str, str]:
    values = _load(CredentialsForm(), form)
    return values["email"].strip(), values["password"]


def read_key_name(form: Mapping[str, Any]) -> str:
    return _load(KeyNameForm(), form)["name"].strip()


def read_demo_prompt(body: Any) -> str:
    prompt = _load(DemoPromptSchema(), body)["prompt"]
    if not prompt.strip():
        raise FormError(_MESSAGES["prompt"])
    return prompt
