"""The OpenAI-compatible API, version 1."""

from flask import Blueprint

blueprint = Blueprint("v1", __name__, url_prefix="/v1")

from api.v1 import chat, models  # noqa: E402,F401  (routes register themselves on the blueprint)
from api.v1 import embeddings  # noqa: E402,F401
