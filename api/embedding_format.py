"""The /v1/embeddings response body, in OpenAI's shape."""

from __future__ import annotations

import base64
from typing import Any

from broker.contracts import vector_floats


def embedding_list(model: str, vectors: list[bytes], usage: dict[str, int], encoding_format: str) -> dict[str, Any]:
    """`vectors` holds each input's vector as little-endian float32 bytes, which is also what
    OpenAI's `base64` format encodes."""
    if encoding_format == "base64":
        embeddings: list[Any] = [base64.b64encode(row).decode("ascii") for row in vectors]
    else:
        embeddings = [vector_floats(row) for row in vectors]
    return {
        "object": "list",
        "data": [{"object": "embedding", "index": index, "embedding": embedding}
                 for index, embedding in enumerate(embeddings)],
        "model": model,
        "usage": {"prompt_tokens": usage.get("prompt_tokens", 0), "total_tokens": usage.get("total_tokens", 0)},
    }
