"""The /v1/embeddings response body, in both encodings."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from api.embedding_format import embedding_list

ROWS = np.array([[0.25, -0.5, 1.0], [0.1, 0.2, 0.3]], dtype="<f4")


def test_float_encoding_is_openai_shaped():
    body = embedding_list("m", [row.tobytes() for row in ROWS], {"prompt_tokens": 5, "total_tokens": 5}, "float")
    assert body["object"] == "list"
    assert body["model"] == "m"
    assert body["usage"] == {"prompt_tokens": 5, "total_tokens": 5}
    assert [item["index"] for item in body["data"]] == [0, 1]
    assert all(item["object"] == "embedding" for item in body["data"])
    assert body["data"][0]["embedding"] == [0.25, -0.5, 1.0]
    assert body["data"][1]["embedding"] == pytest.approx([0.1, 0.2, 0.3])


def test_base64_encoding_is_little_endian_float32():
    body = embedding_list("m", [row.tobytes() for row in ROWS], {"prompt_tokens": 5, "total_tokens": 5}, "base64")
    decoded = [np.frombuffer(base64.b64decode(item["embedding"]), dtype="<f4") for item in body["data"]]
    assert np.array_equal(np.stack(decoded), ROWS)
