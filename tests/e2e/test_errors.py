"""Every rejection is OpenAI-shaped, with the right status and `param`, through the real HTTP stack."""

from __future__ import annotations

import httpx
import openai
import pytest

pytestmark = pytest.mark.e2e

USER = [{"role": "user", "content": "hi"}]


def post(stack, body=None, headers=None, **kwargs) -> httpx.Response:
    return httpx.post(f"{stack.base_url}/v1/chat/completions", json=body, timeout=60,
                      headers={**stack.auth_headers, **(headers or {})}, **kwargs)


def assert_openai_error(response: httpx.Response, status: int, param, code=None) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    assert error["param"] == param
    if code is not None:
        assert error["code"] == code
    return error


@pytest.mark.parametrize("body, param", [
    ({"messages": USER}, "model"),
    ({"model": "m"}, "messages"),
    ({"model": "m", "messages": []}, "messages"),
    ({"model": "m", "messages": "hi"}, "messages"),
    ({"model": "m", "messages": [{"content": "hi"}]}, "messages[0].role"),
    ({"model": "m", "messages": [{"role": "robot", "content": "hi"}]}, "messages[0].role"),
    ({"model": "m", "messages": [{"role": "user"}]}, "messages[0].content"),
    ({"model": "m", "messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
    ({"model": "m", "messages": [USER[0], {"role": "user", "content": [{"type": "text"}]}]},
     "messages[1].content[0].text"),
    ({"model": "m", "messages": [{"role": "user", "content": [{"type": "video", "video": "x"}]}]},
     "messages[0].content[0].type"),
    ({"model": "m", "messages": [{"role": "tool", "content": "42"}]}, "messages[0].tool_call_id"),
    ({"model": "m", "messages": USER, "temperature": 2.5}, "temperature"),
    ({"model": "m", "messages": USER, "temperature": "hot"}, "temperature"),
    ({"model": "m", "messages": USER, "top_p": 1.5}, "top_p"),
    ({"model": "m", "messages": USER, "max_tokens": 0}, "max_tokens"),
    ({"model": "m", "messages": USER, "max_tokens": 2.5}, "max_tokens"),
    ({"model": "m", "messages": USER, "max_completion_tokens": -1}, "max_completion_tokens"),
    ({"model": "m", "messages": USER, "stream": "yes"}, "stream"),
    ({"model": "m", "messages": USER, "stream_options": {"include_usage": True}}, "stream_options"),
    ({"model": "m", "messages": USER, "stream": True, "stream_options": {"include_usage": 1}},
     "stream_options.include_usage"),
    ({"model": "m", "messages": USER, "stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"model": "m", "messages": USER, "stop": [1]}, "stop"),
    ({"model": "m", "messages": USER, "seed": "x"}, "seed"),
    ({"model": "m", "messages": USER, "presence_penalty": 3}, "presence_penalty"),
    ({"model": "m", "messages": USER, "frequency_penalty": -2.5}, "frequency_penalty"),
    ({"model": "m", "messages": USER, "n": 0}, "n"),
    ({"model": "m", "messages": USER, "user": 5}, "user"),
    ({"model": "m", "messages": USER, "tools": [{"type": "function"}]}, "tools[0].function"),
    ({"model": "m", "messages": USER, "tool_choice": "required"}, "tool_choice"),
    ({"model": "m", "messages": USER, "logprobs": True}, "logprobs"),
    ({"model": "m", "messages": USER, "response_format": {"type": "xml"}}, "response_format.type"),
    ({"model": "m", "messages": USER, "temprature": 1}, "temprature"),
])
def test_invalid_body_is_400_naming_the_field(e2e_stack, body, param):
    assert_openai_error(post(e2e_stack, body), 400, param)


def test_too_many_choices_is_400(e2e_stack, model_id):
    assert_openai_error(post(e2e_stack, {"model": model_id, "messages": USER, "n": 9}), 400, "n")


def test_unknown_model_is_404_model_not_found(e2e_stack):
    error = assert_openai_error(post(e2e_stack, {"model": "gpt-9", "messages": USER}), 404, "model",
                                "model_not_found")
    assert "gpt-9" in error["message"]


def test_malformed_json_is_400(e2e_stack):
    response = post(e2e_stack, content=b'{"model": "x", "messages": [', headers={"Content-Type": "application/json"})
    assert_openai_error(response, 400, None)


def test_body_that_is_not_an_object_is_400(e2e_stack):
    assert_openai_error(post(e2e_stack, [1, 2, 3]), 400, None)


def test_wrong_content_type_is_400(e2e_stack):
    response = post(e2e_stack, content=b"model=x", headers={"Content-Type": "application/x-www-form-urlencoded"})
    error = assert_openai_error(response, 400, None)
    assert "Content-Type" in error["message"]


def test_oversized_body_is_413(e2e_stack):
    huge = {"model": "m", "messages": [{"role": "user", "content": "x" * 2_000_000}]}
    assert_openai_error(post(e2e_stack, huge), 413, None, "request_too_large")


def test_prompt_longer_than_the_context_is_400_before_queueing(e2e_stack, model_id):
    long_prompt = [{"role": "user", "content": "word " * 9000}]
    error = assert_openai_error(post(e2e_stack, {"model": model_id, "messages": long_prompt}), 400, "messages",
                                "context_length_exceeded")
    assert "8192" in error["message"]


def test_max_tokens_beyond_the_context_is_400(e2e_stack, model_id):
    assert_openai_error(post(e2e_stack, {"model": model_id, "messages": USER, "max_tokens": 9000}), 400,
                        "messages", "context_length_exceeded")


def test_unknown_route_is_openai_shaped_404(e2e_stack):
    response = httpx.get(f"{e2e_stack.base_url}/v1/nothing-here", timeout=10)
    assert_openai_error(response, 404, None)


def test_sdk_raises_typed_errors(client):
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-9", messages=USER)
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="smollm2-135m-instruct", messages=USER, temperature=5)
    assert caught.value.body["param"] == "temperature"
