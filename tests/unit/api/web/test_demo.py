"""The homepage demo: a free streamed completion, limited per client address, never billed."""

from __future__ import annotations

import dataclasses

import pytest

from api.app import create_app
from api.web import demo
from tests.unit.api.web.conftest import csrf_token_of
from shared.errors import ModelUnavailableError


class FakeRun:
    def __init__(self):
        self.started = False

    def wait_started(self):
        self.started = True

    def sse(self):
        yield b'data: {"choices": [{"index": 0, "delta": {"content": "Hello"}}]}\n\n'
        yield b"data: [DONE]\n\n"


@pytest.fixture
def started(monkeypatch):
    """Records what the demo asked of start_chat_completion, and serves a fixed stream."""
    calls = []

    def start(runtime, request, request_id, client_gone, meter_for=None):
        calls.append({"request": request, "meter_for": meter_for})
        return FakeRun()

    monkeypatch.setattr(demo, "start_chat_completion", start)
    return calls


def _ask(client, token, prompt="Say hi", address="203.0.113.7", forwarded_for=None):
    headers = {"X-CSRFToken": token}
    if forwarded_for:
        headers["X-Forwarded-For"] = forwarded_for
    return client.post("/demo/chat", json={"prompt": prompt}, headers=headers, environ_base={"REMOTE_ADDR": address})


def test_the_demo_streams_the_default_model_free_of_charge(client, csrf_token, started, web_settings):
    response = _ask(client, csrf_token())
    assert response.status_code == 200 and response.mimetype == "text/event-stream"
    assert b'"content": "Hello"' in response.data and response.data.endswith(b"data: [DONE]\n\n")
    [call] = started
    assert call["meter_for"] is None  # no API key, nothing metered or charged
    request = call["request"]
    assert request.model == web_settings.demo_model and request.stream
    assert request.max_tokens == web_settings.demo_max_tokens
    assert request.messages[0]["content"] == "Say hi"


def test_the_demo_is_limited_per_address(client, csrf_token, started, web_settings):
    token = csrf_token()
    for _ in range(web_settings.demo_requests_per_minute):
        assert _ask(client, token).status_code == 200
    refused = _ask(client, token)
    assert refused.status_code == 429
    assert refused.get_json()["error"]["code"] == "rate_limit_exceeded"
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert _ask(client, token, address="198.51.100.1").status_code == 200  # someone else still may
    assert len(started) == web_settings.demo_requests_per_minute + 1


def test_the_demo_needs_the_pages_csrf_token(client, started):
    response = client.post("/demo/chat", json={"prompt": "hi"})
    assert response.status_code == 400 and response.mimetype == "application/json"
    assert "CSRF" in response.get_json()["error"]["message"]
    assert started == []


@pytest.mark.parametrize("body", [{}, {"prompt": ""}, {"prompt": "   "}, {"prompt": 5}, {"prompt": "x" * 2001}])
def test_bad_prompts_get_an_openai_error(client, csrf_token, started, body):
    response = client.post("/demo/chat", json=body, headers={"X-CSRFToken": csrf_token()})
    assert response.status_code == 400
    assert response.get_json()["error"]["param"] == "prompt"
    assert started == []


def test_refusals_from_the_service_reach_the_page_as_json(client, csrf_token, monkeypatch):
    def unavailable(*args, **kwargs):
        raise ModelUnavailableError("No worker is serving the model right now; please retry later.")

    monkeypatch.setattr(demo, "start_chat_completion", unavailable)
    response = client.post("/demo/chat", json={"prompt": "hi"}, headers={"X-CSRFToken": csrf_token()})
    assert response.status_code == 503
    assert "No worker" in response.get_json()["error"]["message"]


def test_behind_a_trusted_proxy_the_limit_counts_the_forwarded_address(runtime, web_settings, started):
    runtime.settings = dataclasses.replace(web_settings, trusted_proxies=1)
    client = create_app(runtime.settings, runtime).test_client()
    token = csrf_token_of(client.get("/").get_data(as_text=True))
    for _ in range(web_settings.demo_requests_per_minute):
        assert _ask(client, token, address="10.0.0.1", forwarded_for="203.0.113.50").status_code == 200
    assert _ask(client, token, address="10.0.0.1", forwarded_for="203.0.113.50").status_code == 429
    # Same proxy, another visitor: their own budget.
    assert _ask(client, token, address="10.0.0.1", forwarded_for="203.0.113.51").status_code == 200
