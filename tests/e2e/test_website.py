"""The website in a real browser (Debian's chromium driven by Playwright) against the whole stack:
sign up, create a key, call the API with it through the openai SDK, see the request and its
cost on the dashboard; and the homepage demo streaming a real completion into the page."""

from __future__ import annotations

import re
import time
from pathlib import Path

import openai
import pytest

from api.web.template_filters import usd
from shared.registry import ModelRegistry
from shared.settings import DEFAULT_MODELS_FILE

pytestmark = pytest.mark.e2e

CHROMIUM = Path("/usr/bin/chromium")
MODEL = "smollm2-135m-instruct"
PASSWORD = "a password for the browser test"


@pytest.fixture(scope="module")
def website(stack_factory):
    stack = stack_factory(LLAMAGATE_DEMO_MAX_TOKENS="48", LLAMAGATE_DEMO_REQUESTS_PER_MINUTE="20")
    stack.start_worker(MODEL)
    stack.start_web(workers=2)
    stack.wait_ready(MODEL, timeout=240)
    return stack


@pytest.fixture
def page(tmp_path):
    """A fresh headless chromium profile for each test."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"])
        context.set_default_timeout(30_000)
        page = context.pages[0] if context.pages else context.new_page()
        yield page
        context.close()


def test_sign_up_create_a_key_use_it_and_see_the_cost(website, page, make_openai_client):
    page.goto(f"{website.base_url}/signup")
    page.fill("#email", f"browser-{time.time_ns()}@example.com")
    page.fill("#password", PASSWORD)
    page.click("form.stacked-form button[type=submit]")
    page.wait_for_url(f"{website.base_url}/dashboard")
    assert page.inner_text("#balance") == "$5.00"

    page.fill("#key-name", "browser test")
    page.click("#create-key")
    secret = page.inner_text("#new-key").strip()
    assert re.fullmatch(r"llg_sk_[A-Za-z0-9_-]{32,}", secret)

    client = make_openai_client(website, api_key=secret, timeout=120, max_retries=0)
    completion = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Name a colour."}], max_tokens=12)
    request_id = completion.id.removeprefix("chatcmpl-")
    pricing = ModelRegistry.load(DEFAULT_MODELS_FILE).get(MODEL).pricing
    cost = pricing.cost_micros(completion.usage.prompt_tokens, completion.usage.completion_tokens)
    assert cost > 0

    page.goto(f"{website.base_url}/dashboard")
    row = page.locator(f'tr[data-request-id="{request_id}"]')
    row.wait_for()
    assert row.locator(".cost").inner_text() == usd(cost)
    assert MODEL in row.inner_text() and "browser test" in row.inner_text()
    assert page.inner_text("#balance") == usd(5_000_000 - cost)
    key_row = page.locator("#keys-table tbody tr", has_text="browser test")
    assert "never" not in key_row.inner_text()  # its last use is recorded

    page.on("dialog", lambda dialog: dialog.accept())  # the "Revoke this key?" confirmation
    key_row.get_by_role("button", name="Revoke").click()
    page.wait_for_selector("text=The key is revoked")
    with pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=4)


def test_the_homepage_demo_streams_text_into_the_page(website, page):
    demo_requests = []
    page.on("request", lambda request: demo_requests.append(request) if "/demo/" in request.url else None)
    page.goto(website.base_url)
    # Count each change to the answer box: a stream shows up as many small appends.
    page.evaluate("""() => {
        window.outputChanges = 0;
        new MutationObserver(() => window.outputChanges++).observe(
            document.getElementById("demo-output"), {childList: true, characterData: true, subtree: true});
    }""")
    page.fill("#demo-prompt", "Write one sentence about the sea.")
    page.click("#demo-send")
    page.locator('#demo-output[data-state="done"]').wait_for(timeout=120_000)

    assert page.inner_text("#demo-output").strip()
    assert page.evaluate("window.outputChanges") >= 3
    assert page.inner_text("#demo-status").startswith("Done in")
    [request] = demo_requests
    assert "authorization" not in request.headers
    assert "llg_sk_" not in page.content().replace("llg_sk_...", "")
