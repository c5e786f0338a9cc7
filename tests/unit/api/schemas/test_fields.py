"""first_error: marshmallow's nested error messages become OpenAI's `param` path and message."""

from __future__ import annotations

import pytest
from marshmallow import Schema, ValidationError

from api.schemas.fields import StrictBoolean, StrictFloat, StrictInteger, first_error


@pytest.mark.parametrize("messages, param", [
    ({"temperature": ["Must be between 0 and 2."]}, "temperature"),
    ({"messages": {0: {"role": ["bad"]}}}, "messages[0].role"),
    ({"messages": {3: {"content": {1: {"text": ["bad"]}}}}}, "messages[3].content[1].text"),
    ({"messages": {0: {"_schema": ["Invalid input type."]}}}, "messages[0]"),
    ({"stream_options": {"include_usage": ["bad"]}}, "stream_options.include_usage"),
    ({"_schema": ["The whole body is wrong."]}, None),
    ({0: ["bad"]}, "[0]"),
    ({"messages": {0: [{"role": ["nested in a list"]}]}}, "messages[0].role"),
    ({"stop": "a bare string"}, "stop"),
])
def test_param_path(messages, param):
    assert first_error(messages)[0] == param


def test_first_of_several_errors_is_reported():
    assert first_error({"n": ["first"], "stop": ["second"]}) == ("n", "Invalid 'n': first")


@pytest.mark.parametrize("message, expected", [
    ("Unknown field.", "Unrecognized request argument supplied: messages[0].mood"),
    ("Missing data for required field.", "Missing required parameter: 'messages[0].mood'."),
    ("Field may not be null.", "Invalid value for 'messages[0].mood': null is not allowed."),
    ("Not a valid string.", "Invalid 'messages[0].mood': not a valid string."),
])
def test_message_is_phrased_for_the_path(message, expected):
    assert first_error({"messages": {0: {"mood": [message]}}}) == ("messages[0].mood", expected)


def test_message_without_path_is_left_as_is():
    assert first_error({"_schema": ["Something Is Off."]}) == (None, "Something Is Off.")


def test_empty_messages_give_a_generic_error():
    assert first_error({}) == (None, "Invalid request.")


class _Numbers(Schema):
    number = StrictFloat()
    integer = StrictInteger()
    flag = StrictBoolean()


@pytest.mark.parametrize("field, value, message", [
    ("number", "1.5", "expected a number, but got a string instead."),
    ("number", True, "expected a number, but got a boolean instead."),
    ("integer", 2.0, "expected an integer, but got a number instead."),
    ("integer", False, "expected an integer, but got a boolean instead."),
    ("integer", [1], "expected an integer, but got an array instead."),
    ("flag", 1, "expected a boolean, but got a number instead."),
    ("flag", "true", "expected a boolean, but got a string instead."),
    ("flag", {}, "expected a boolean, but got an object instead."),
])
def test_strict_fields_refuse_other_json_types(field, value, message):
    with pytest.raises(ValidationError) as caught:
        _Numbers().load({field: value})
    assert caught.value.messages[field] == [message]


@pytest.mark.parametrize("field, value, expected", [
    ("number", 1, 1.0),
    ("number", 1.5, 1.5),
    ("integer", 3, 3),
    ("flag", False, False),
])
def test_strict_fields_accept_their_own_json_type(field, value, expected):
    loaded = _Numbers().load({field: value})[field]
    assert loaded == expected and type(loaded) is type(expected)
