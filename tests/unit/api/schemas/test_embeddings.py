"""The /v1/embeddings request schema: OpenAI's four input shapes, and a 400 naming the field otherwise."""

from __future__ import annotations

import pytest

from api.schemas.embeddings import MAX_INPUTS, parse_embeddings
from shared.errors import InvalidRequestError

M = "all-minilm-l6-v2"


def test_a_string_is_one_text():
    request = parse_embeddings({"model": M, "input": "hello"})
    assert (request.texts, request.token_ids, request.input_count) == (["hello"], None, 1)
    assert (request.encoding_format, request.dimensions, request.user) == ("float", None, None)


def test_an_array_of_strings_keeps_its_order():
    request = parse_embeddings({"model": M, "input": ["b", "a", "b"], "encoding_format": "base64",
                                "dimensions": 64, "user": "u-1"})
    assert request.texts == ["b", "a", "b"]
    assert (request.encoding_format, request.dimensions, request.user) == ("base64", 64, "u-1")


def test_an_array_of_token_ids_is_one_input():
    request = parse_embeddings({"model": M, "input": [101, 7592, 102]})
    assert (request.texts, request.token_ids) == (None, [[101, 7592, 102]])


def test_an_array_of_token_id_arrays_is_several_inputs():
    request = parse_embeddings({"model": M, "input": [[101, 102], [7592]]})
    assert request.token_ids == [[101, 102], [7592]]
    assert request.input_count == 2


def test_null_optionals_take_their_defaults():
    request = parse_embeddings({"model": M, "input": "x", "encoding_format": None, "dimensions": None,
                                "user": None})
    assert (request.encoding_format, request.dimensions) == ("float", None)


def test_exactly_the_input_limit_is_accepted():
    assert parse_embeddings({"model": M, "input": ["x"] * MAX_INPUTS}).input_count == MAX_INPUTS


@pytest.mark.parametrize("body, param, words", [
    ({"input": "x"}, "model", "Missing required parameter"),
    ({"model": M}, "input", "Missing required parameter"),
    ({"model": M, "input": ""}, "input", "empty string"),
    ({"model": M, "input": []}, "input", "empty array"),
    ({"model": M, "input": ["a", ""]}, "input[1]", "empty string"),
    ({"model": M, "input": [[1, 2], []]}, "input[1]", "empty array"),
    ({"model": M, "input": ["x"] * (MAX_INPUTS + 1)}, "input", f"at most {MAX_INPUTS}"),
    ({"model": M, "input": 5}, "input", "expected a string"),
    ({"model": M, "input": None}, "input", "null"),
    ({"model": M, "input": {"text": "x"}}, "input", "expected a string"),
    ({"model": M, "input": [True, False]}, "input", "expected a string"),
    ({"model": M, "input": [1.5]}, "input", "expected a string"),
    ({"model": M, "input": ["a", 1]}, "input[1]", "expected a string"),
    ({"model": M, "input": [1, "a"]}, "input", "integers"),
    ({"model": M, "input": [1, -2]}, "input", "negative"),
    ({"model": M, "input": [[1], "a"]}, "input[1]", "array of token ids"),
    ({"model": M, "input": [[1], [2.5]]}, "input[1]", "integers"),
    ({"model": M, "input": [{"a": 1}]}, "input", "expected a string"),
    ({"model": M, "input": "x", "encoding_format": "int8"}, "encoding_format", "'float', 'base64'"),
    ({"model": M, "input": "x", "dimensions": 0}, "dimensions", None),
    ({"model": M, "input": "x", "dimensions": "64"}, "dimensions", "expected an integer"),
    ({"model": M, "input": "x", "dimensions": 64.0}, "dimensions", "expected an integer"),
    ({"model": M, "input": "x", "user": 5}, "user", None),
    ({"model": M, "input": "x", "temperature": 0}, "temperature", "Unrecognized request argument"),
])
def test_invalid_bodies_name_the_field(body, param, words):
    with pytest.raises(InvalidRequestError) as caught:
        parse_embeddings(body)
    error = caught.value
    assert (error.status, error.param) == (400, param)
    if words:
        assert words in error.message


def test_a_body_that_is_not_an_object_is_refused():
    with pytest.raises(InvalidRequestError):
        parse_embeddings(["x"])
