"""The public pages, and errors as pages for people but JSON for API clients."""

from __future__ import annotations

import dataclasses
import re


def test_homepage_has_the_demo_and_the_signup_offer(client):
    response = client.get("/")
    page = response.get_data(as_text=True)
    assert response.status_code == 200
    assert 'id="demo-form"' in page and "/static/demo.js" in page
    assert "Start with $5.00 of free credit" in page
    assert "llg_sk_..." in page and not re.search(r"llg_sk_[A-Za-z0-9_-]{32}", page)  # a placeholder, no key


def test_docs_use_this_deployments_base_url_and_cover_every_topic(client):
    page = client.get("/docs", base_url="https://api.llamagate.example").get_data(as_text=True)
    assert 'OpenAI(base_url="https://api.llamagate.example/v1"' in page
    assert "curl https://api.llamagate.example/v1/chat/completions" in page
    assert "pip install openai" in page
    for section in ("streaming", "tools", "json-mode", "structured-outputs", "vision", "embeddings", "errors",
                    "rate-limits"):
        assert f'<section id="{section}">' in page, section


def test_docs_explain_images_with_this_deployments_limits(client, runtime):
    page = client.get("/docs").get_data(as_text=True)
    vision = page[page.index('<section id="vision">'):]
    vision = vision[:vision.index("</section>")]
    assert "up to 8 per request" in vision and "10,485,760 bytes" in vision and "25,000,000 pixels" in vision
    assert "data:image/png;base64," in vision and "http(s)" in vision
    assert "Not available yet" not in vision


def test_docs_leave_out_image_urls_where_fetching_is_off(tmp_path, runtime):
    import dataclasses

    from api.app import create_app

    settings = dataclasses.replace(runtime.settings, image_fetch_enabled=False)
    runtime.settings = settings
    page = create_app(settings, runtime).test_client().get("/docs").get_data(as_text=True)
    vision = page[page.index('<section id="vision">'):page.index('<section id="embeddings">')]
    assert "http(s)" not in vision and "data URL" in vision


def test_pricing_lists_every_model_with_prices_and_badges(client, registry, runtime):
    page = client.get("/pricing").get_data(as_text=True)
    assert "Start with $5.00" in page
    for spec in registry:
        row = re.search(rf'<tr data-model="{re.escape(spec.id)}">(.*?)</tr>', page, re.S).group(1)
        assert f"{spec.context_length:,}" in row
    smollm = re.search(r'<tr data-model="smollm2-135m-instruct">(.*?)</tr>', page, re.S).group(1)
    assert "$0.02" in smollm and "$0.04" in smollm and "serving now" in smollm and "Chat" in smollm
    benchmark = re.search(r'<tr data-model="llamagate-benchmark">(.*?)</tr>', page, re.S).group(1)
    assert "offline" in benchmark


def test_pricing_shows_a_vision_model_with_its_badge_and_image_cost(client, runtime, vision_models_file):
    from shared.registry import ModelRegistry

    runtime.registry = ModelRegistry.load(vision_models_file)
    page = client.get("/pricing").get_data(as_text=True)
    row = re.search(r'<tr data-model="tiny-llava">(.*?)</tr>', page, re.S).group(1)
    assert '<span class="badge badge-vision">Vision</span>' in row and "Vision chat" in row
    assert "Images: 16 tokens per image" in row
    smollm = re.search(r'<tr data-model="smollm2-135m-instruct">(.*?)</tr>', page, re.S).group(1)
    assert "badge-vision" not in smollm and "Images:" not in smollm
    assert "How are images priced?" in page


def test_unknown_pages_are_html_and_unknown_api_paths_are_openai_json(client):
    page = client.get("/no-such-page")
    assert page.status_code == 404 and page.mimetype == "text/html"
    assert "There is no page at this address" in page.get_data(as_text=True)
    api = client.get("/v1/no-such-endpoint", headers={"Authorization": "Bearer x"})
    assert api.status_code in (401, 404) and api.mimetype == "application/json"
    assert "error" in api.get_json()


def test_pages_carry_a_content_security_policy_and_api_responses_do_not(client):
    assert "script-src 'self'" in client.get("/").headers["Content-Security-Policy"]
    assert "Content-Security-Policy" not in client.get("/v1/models").headers


def test_docs_state_the_deployments_rate_limits(app, runtime, web_settings):
    runtime.settings = dataclasses.replace(web_settings, rate_limit_requests=30, rate_limit_tokens=50_000,
                                           rate_limit_concurrency=4)
    page = app.test_client().get("/docs").get_data(as_text=True)
    section = re.search(r'<section id="rate-limits">(.*?)</section>', page, re.S).group(1)
    assert "30 requests</strong>" in section and "50,000 tokens</strong> per minute" in section
    assert "4 requests in progress" in section and "X-RateLimit-Remaining" in section
