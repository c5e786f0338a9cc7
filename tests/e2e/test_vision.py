"""Vision through the whole stack, with the official `openai` SDK: images as data URLs and as http URLs
reach a worker serving the tiny random-weight LLaVA (built by the tests, loaded through the
registry), are counted and charged as prompt tokens, and every unusable or unsafe image is a 400.

Three web processes share one worker: one with the default fetch policy, one that allows the test
image server's address (127.0.0.1), one that allows only 127.0.0.2 (to show a redirect from there
to 127.0.0.1 refused).
"""

from __future__ import annotations

import base64
import io

import httpx
import openai
import pytest
import redis
from PIL import Image

from api.accounts import credits
from shared.chat_tokenizer import ChatTokenizer
from shared.image_tokens import image_token_rule
from shared.registry import ModelRegistry

pytestmark = pytest.mark.e2e

VLM = "tiny-llava"
TEXT_MODEL = "smollm2-135m-instruct"  # no vision capability (no worker needed: refused before queueing)
MAX_IMAGES = 3
MAX_IMAGE_BYTES = 200_000
INLINE_MAX_BYTES = 2_000  # images above this go through Redis


def encoded(image: Image.Image, image_format: str = "PNG") -> bytes:
    out = io.BytesIO()
    image.save(out, image_format)
    return out.getvalue()


def data_url(data: bytes, media_type: str = "image/png") -> str:
    return f"data:{media_type};base64,{base64.b64encode(data).decode()}"


def ask(*images: str, text: str = "What is in this picture?") -> list[dict]:
    return [{"role": "user", "content": [{"type": "text", "text": text}]
             + [{"type": "image_url", "image_url": {"url": url}} for url in images]}]


RED_SQUARE = encoded(Image.new("RGB", (64, 64), (220, 20, 20)))
NOISE = encoded(Image.effect_noise((160, 160), 90).convert("RGB"))  # incompressible: tens of kB


@pytest.fixture(scope="module")
def vision_env(vision_models_file) -> dict[str, str]:
    return {"LLAMAGATE_MODELS_FILE": str(vision_models_file), "LLAMAGATE_TORCH_THREADS": "1",
            "LLAMAGATE_MAX_IMAGES_PER_REQUEST": str(MAX_IMAGES), "LLAMAGATE_IMAGE_MAX_BYTES": str(MAX_IMAGE_BYTES),
            "LLAMAGATE_IMAGE_INLINE_MAX_BYTES": str(INLINE_MAX_BYTES)}


@pytest.fixture(scope="module")
def vision_stack(module_stack_factory, vision_env):
    stack = module_stack_factory(**vision_env)
    stack.start_worker(VLM)
    stack.start_web(workers=1)
    stack.wait_ready(VLM, timeout=240)
    return stack


def web_allowing(module_stack_factory, vision_env, networks: str):
    """Another web process (with its own account store) that may fetch from `networks`; it shares
    the first stack's worker through RabbitMQ and Redis."""
    stack = module_stack_factory(**vision_env, LLAMAGATE_IMAGE_FETCH_ALLOWED_NETWORKS=networks)
    stack.start_web(workers=1)
    stack.wait_ready(VLM, timeout=60)
    return stack


@pytest.fixture(scope="module")
def loopback_web(module_stack_factory, vision_env, vision_stack):
    return web_allowing(module_stack_factory, vision_env, "127.0.0.1/32")


@pytest.fixture(scope="module")
def other_loopback_web(module_stack_factory, vision_env, vision_stack):
    return web_allowing(module_stack_factory, vision_env, "127.0.0.2/32")


@pytest.fixture(scope="module")
def client(vision_stack, make_openai_client):
    return make_openai_client(vision_stack, timeout=120, max_retries=0)


@pytest.fixture(scope="module")
def expected_prompt_tokens(vision_models_file):
    """The prompt tokens of a conversation as the model counts them, computed here independently
    of the API: the model's template rendered, each image as its processor's tokens."""
    spec = ModelRegistry.load(vision_models_file).get(VLM)
    directory = spec.weights.resolve()
    tokenizer, rule = ChatTokenizer.from_directory(directory), image_token_rule(directory)

    def count(messages: list[dict]) -> int:
        templated = [dict(m, content=[{"type": "image"} if p["type"] == "image_url" else p for p in m["content"]])
                     for m in messages]
        images = sum(p["type"] == "image_url" for m in messages for p in m["content"])
        rendered = tokenizer.render(templated, content_parts=True)
        return len(tokenizer.encode(rule.expand(rendered, [(0, 0, "auto")] * images)))

    return count


def refusal(client, messages, model: str = VLM) -> openai.BadRequestError:
    return refusal_with(client, messages, model=model, max_tokens=2)


def refusal_with(client, messages, **params) -> openai.BadRequestError:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(messages=messages, **{"model": VLM, **params})
    return caught.value


# --- images that are served ------------------------------------------------------------------------

def test_a_data_url_round_trip_counts_and_charges_the_image_tokens(vision_stack, make_openai_client,
                                                                   expected_prompt_tokens):
    from tiny_vlm import TOKENS_PER_IMAGE

    account = vision_stack.create_account(credits="1.00")
    client = make_openai_client(vision_stack, api_key=account.api_key, timeout=120, max_retries=0)
    messages = ask(data_url(RED_SQUARE))
    raw = client.chat.completions.with_raw_response.create(model=VLM, messages=messages, max_tokens=6,
                                                           temperature=0)
    completion = raw.parse()
    assert completion.model == VLM and isinstance(completion.choices[0].message.content, str)
    assert completion.choices[0].finish_reason in ("stop", "length")
    expected = expected_prompt_tokens(messages)
    assert completion.usage.prompt_tokens == expected
    assert expected - TOKENS_PER_IMAGE == expected_prompt_tokens(ask(text="What is in this picture?")) + 1
    record = vision_stack.usage_record(raw.headers["x-request-id"])
    assert (record.prompt_tokens, record.status) == (expected, "ok")
    spec = ModelRegistry.load(vision_stack.env["LLAMAGATE_MODELS_FILE"]).get(VLM)
    assert record.cost_micros == spec.pricing.cost_micros(expected, completion.usage.completion_tokens)
    assert credits.get_balance(vision_stack.db, account.user_id).balance_micros == 1_000_000 - record.cost_micros


def test_several_images_stream_with_their_tokens_in_the_usage(client, expected_prompt_tokens):
    jpeg = encoded(Image.new("RGB", (30, 90), (20, 20, 220)), "JPEG")
    gif = encoded(Image.new("RGB", (12, 12), (20, 200, 20)), "GIF")
    messages = ask(data_url(RED_SQUARE), data_url(jpeg, "image/jpeg"), data_url(gif, "image/gif"),
                   text="Which of these is largest?")
    stream = client.chat.completions.create(model=VLM, messages=messages, max_tokens=4, stream=True,
                                            stream_options={"include_usage": True})
    chunks = list(stream)
    assert chunks[-1].usage.prompt_tokens == expected_prompt_tokens(messages)
    assert chunks[-1].usage.completion_tokens <= 4


def test_an_image_over_the_inline_cap_is_answered_and_leaves_no_key_behind(client, vision_stack,
                                                                           expected_prompt_tokens):
    # That it goes through Redis (and not inline) is shown in tests/integration/test_job_images.py.
    assert INLINE_MAX_BYTES < len(NOISE) < MAX_IMAGE_BYTES
    messages = ask(data_url(NOISE))
    completion = client.chat.completions.create(model=VLM, messages=messages, max_tokens=3)
    assert completion.usage.prompt_tokens == expected_prompt_tokens(messages)
    store = redis.Redis.from_url(vision_stack.env["LLAMAGATE_REDIS_URL"])
    assert list(store.scan_iter("llg:job:*:image:*")) == []


def test_a_conversation_with_images_in_earlier_turns(client, expected_prompt_tokens):
    messages = ask(data_url(RED_SQUARE)) + [{"role": "assistant", "content": [{"type": "text", "text": "A square."}]},
                                            {"role": "user", "content": [{"type": "text", "text": "And this?"},
                                                                         {"type": "image_url", "image_url": {
                                                                             "url": data_url(NOISE),
                                                                             "detail": "low"}}]}]
    completion = client.chat.completions.create(model=VLM, messages=messages, max_tokens=2)
    assert completion.usage.prompt_tokens == expected_prompt_tokens(messages)


# --- images that are refused -----------------------------------------------------------------------

def test_images_count_toward_the_context_before_anything_is_queued(client, expected_prompt_tokens):
    messages = ask(data_url(RED_SQUARE), data_url(NOISE))
    prompt = expected_prompt_tokens(messages)
    context = 2048  # the tiny model's, in its registry entry
    error = refusal_with(client, messages, max_tokens=context - prompt + 1)
    assert error.body["code"] == "context_length_exceeded"
    assert f"({prompt} in the messages, {context - prompt + 1} in the completion)" in error.body["message"]
    assert error.body["message"].endswith("Please reduce the length of the messages or completion."), \
        "refused by the API (the worker's refusal reads differently)"


def test_an_image_for_a_model_without_vision_is_refused_naming_the_part(client):
    error = refusal(client, ask(data_url(RED_SQUARE)), model=TEXT_MODEL)
    assert error.body["param"] == "messages[0].content[1]"
    assert "does not accept images" in error.body["message"]


@pytest.mark.parametrize("url, code, words", [
    (data_url(NOISE * 4), "image_too_large", "the limit is 200,000 bytes"),
    (data_url(b"\x89PNG\r\n\x1a\n" + b"\x17" * 500), "invalid_image_format", "could not be decoded"),
    (data_url(encoded(Image.new("RGB", (8, 8)), "BMP")), "invalid_image_format", "PNG, JPEG, WebP or GIF"),
    (data_url(RED_SQUARE, "image/svg+xml"), "invalid_image_format", "'image/svg+xml'"),
    ("file:///etc/passwd", "invalid_image_url", "'file'"),
    ("ftp://127.0.0.1/image.png", "invalid_image_url", "'ftp'"),
])
def test_unusable_images_are_refused(client, url, code, words):
    error = refusal(client, ask(url))
    assert error.status_code == 400
    assert error.body["param"] == "messages[0].content[1].image_url.url"
    assert error.body["code"] == code and words in error.body["message"]


def test_too_many_images_are_refused(client):
    error = refusal(client, ask(*[data_url(RED_SQUARE)] * (MAX_IMAGES + 1)))
    assert error.body["code"] == "too_many_images"
    assert error.body["param"] == f"messages[0].content[{MAX_IMAGES + 1}]"


def test_a_refused_image_costs_nothing(vision_stack, make_openai_client):
    account = vision_stack.create_account(credits="1.00")
    client = make_openai_client(vision_stack, api_key=account.api_key, max_retries=0)
    refusal(client, ask("data:image/png;base64,AAAA"))
    assert credits.get_balance(vision_stack.db, account.user_id) == credits.Balance(1_000_000, 0)


# --- images fetched from http URLs ----------------------------------------------------------------

def test_an_image_on_loopback_is_refused_by_default(client, image_server):
    error = refusal(client, ask(image_server.url("/image.png")))
    assert error.body["param"] == "messages[0].content[1].image_url.url"
    assert "127.0.0.1 is a loopback address" in error.body["message"]
    assert image_server.requests == []


def test_the_same_image_is_fetched_where_its_address_is_allowed(loopback_web, make_openai_client, image_server,
                                                                expected_prompt_tokens):
    client = make_openai_client(loopback_web, timeout=120, max_retries=0)
    messages = ask(image_server.url("/image.png"))
    completion = client.chat.completions.create(model=VLM, messages=messages, max_tokens=3)
    assert completion.usage.prompt_tokens == expected_prompt_tokens(messages)
    assert image_server.requests == ["/image.png"]


def test_a_key_over_its_rate_limit_is_refused_before_anything_is_fetched(loopback_web, make_openai_client,
                                                                          image_server):
    account = loopback_web.create_account(rate_limit_requests=1)
    client = make_openai_client(loopback_web, api_key=account.api_key, max_retries=0)
    client.chat.completions.create(model=VLM, messages=ask(data_url(RED_SQUARE)), max_tokens=1)
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model=VLM, messages=ask(image_server.url("/image.png")), max_tokens=1)
    assert caught.value.body["type"] == "requests"
    assert image_server.requests == []


def test_fetched_content_is_checked_where_the_address_is_allowed(loopback_web, make_openai_client, image_server):
    client = make_openai_client(loopback_web, max_retries=0)
    assert "'text/html'" in refusal(client, ask(image_server.url("/page.html"))).body["message"]
    assert refusal(client, ask(image_server.url(f"/large.png?bytes={MAX_IMAGE_BYTES + 1}"))).body["code"] == \
        "image_too_large"
    assert "HTTP 404" in refusal(client, ask(image_server.url("/missing.png"))).body["message"]


def test_a_redirect_to_loopback_is_refused(other_loopback_web, make_openai_client, image_server,
                                           second_image_server):
    client = make_openai_client(other_loopback_web, max_retries=0)
    url = second_image_server.url(f"/redirect?to={image_server.url('/image.png')}")
    error = refusal(client, ask(url))
    assert "127.0.0.1 is a loopback address" in error.body["message"]
    assert second_image_server.requests and image_server.requests == []


def test_a_name_resolving_to_a_private_address_is_refused(client, image_server):
    # `localhost` is such a name on every machine; a rebinding DNS name is covered by the unit tests.
    error = refusal(client, ask(f"http://localhost:{image_server.port}/image.png"))
    assert "loopback" in error.body["message"]
    assert image_server.requests == []


# --- the model on the website ---------------------------------------------------------------------

def test_the_pricing_page_shows_the_vision_badge(vision_stack):
    page = httpx.get(f"{vision_stack.base_url}/pricing", timeout=10).text
    row = page[page.index(f'data-model="{VLM}"'):]
    row = row[:row.index("</tr>")]
    assert 'class="badge badge-vision">Vision</span>' in row
    text_row = page[page.index(f'data-model="{TEXT_MODEL}"'):]
    assert "badge-vision" not in text_row[:text_row.index("</tr>")]
