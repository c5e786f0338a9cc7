"""/v1/embeddings through the official openai SDK, against the whole stack with the real
all-MiniLM-L6-v2 in an embeddings worker."""

from __future__ import annotations

import base64
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import openai
import pytest

EMBEDDING_MODEL = "all-minilm-l6-v2"

pytestmark = pytest.mark.e2e

SENTENCES = [f"Sentence number {n} is about {topic}." for n, topic in enumerate(
    ["the weather", "football", "cooking pasta", "quantum physics", "the stock market"] * 20)]


@pytest.fixture(scope="module")
def embed(embeddings_stack, client):
    def embed(input, **kwargs):
        return client.embeddings.create(model=EMBEDDING_MODEL, input=input, **kwargs)

    return embed


@pytest.fixture(scope="module")
def direct_model(registry_spec):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(registry_spec.weights.resolve()), device="cpu", local_files_only=True)


@pytest.fixture(scope="module")
def registry_spec():
    from shared.registry import ModelRegistry
    from shared.settings import DEFAULT_MODELS_FILE

    return ModelRegistry.load(DEFAULT_MODELS_FILE).get(EMBEDDING_MODEL)


def matrix(response) -> np.ndarray:
    return np.array([item.embedding for item in response.data], dtype=np.float32)


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def test_a_single_string(embed):
    response = embed("The quick brown fox jumps over the lazy dog.")
    assert response.object == "list"
    assert response.model == EMBEDDING_MODEL
    [item] = response.data
    assert (item.object, item.index, len(item.embedding)) == ("embedding", 0, 384)
    assert np.linalg.norm(item.embedding) == pytest.approx(1.0, abs=1e-4)
    # [CLS] the quick brown fox jumps over the lazy dog . [SEP]
    assert response.usage.prompt_tokens == response.usage.total_tokens == 12


def test_a_batch_of_100_keeps_its_order_and_matches_the_model_run_directly(embed, direct_model):
    response = embed(SENTENCES, encoding_format="float")
    assert [item.index for item in response.data] == list(range(100))
    served = matrix(response)
    expected = direct_model.encode(SENTENCES, convert_to_numpy=True)
    assert cosine(served, expected).min() > 0.9999
    assert response.usage.prompt_tokens == sum(
        len(direct_model.tokenize([s])["input_ids"][0]) for s in SENTENCES)


def test_order_follows_the_inputs(embed):
    texts = ["apples and oranges", "a rocket launch", "jazz music at night", "tax returns"]
    forward = matrix(embed(texts))
    backward = matrix(embed(texts[::-1]))
    assert cosine(forward, backward[::-1]).min() > 0.9999
    assert cosine(forward[0], forward[1]) < 0.9  # distinct texts, distinct vectors


def test_identical_inputs_give_identical_vectors(embed):
    vectors = matrix(embed(["the same text", "something else", "the same text"]))
    assert np.array_equal(vectors[0], vectors[2])
    again = matrix(embed("the same text"))[0]
    assert cosine(again, vectors[0]) > 0.99999


def test_base64_round_trip(embed, client):
    floats = matrix(embed(["base64 please", "and another"], encoding_format="float"))
    raw = embed(["base64 please", "and another"], encoding_format="base64")
    decoded = np.stack([np.frombuffer(base64.b64decode(item.embedding), dtype="<f4") for item in raw.data])
    assert decoded.shape == (2, 384)
    assert np.array_equal(decoded, floats)  # the same float32 values, losslessly
    # The SDK's own default asks for base64 and decodes it: the same vectors again.
    assert np.array_equal(matrix(embed(["base64 please", "and another"])), floats)


def test_token_ids_embed_like_their_text(embed):
    text = matrix(embed("hello world"))[0]
    ids = embed([101, 7592, 2088, 102])
    assert ids.usage.prompt_tokens == 4
    assert cosine(matrix(ids)[0], text) > 0.9999
    several = matrix(embed([[101, 7592, 2088, 102], [101, 7592, 102]]))
    assert cosine(several[0], text) > 0.9999


def test_concurrent_requests_each_get_their_own_vectors(embed):
    texts = SENTENCES[:24]
    alone = matrix(embed(texts))
    with ThreadPoolExecutor(24) as pool:
        results = list(pool.map(lambda text: matrix(embed(text))[0], texts))
    assert cosine(np.stack(results), alone).min() > 0.9999


def test_a_sentence_is_closer_to_its_paraphrase_than_to_an_unrelated_sentence(embed):
    sentence, paraphrase, unrelated = matrix(embed([
        "The cat is sleeping on the sofa.",
        "A kitten naps on the couch.",
        "Interest rates were raised by the central bank.",
    ]))
    assert cosine(sentence, paraphrase) > cosine(sentence, unrelated) + 0.2


def test_the_model_is_listed(embeddings_stack, client):
    assert EMBEDDING_MODEL in {model.id for model in client.models.list()}


@pytest.mark.parametrize("kwargs, param, words", [
    ({"input": ""}, "input", "empty string"),
    ({"input": []}, "input", "empty array"),
    ({"input": ["fine", ""]}, "input[1]", "empty string"),
    ({"input": [[]]}, "input[0]", "empty array"),
    ({"input": ["x"] * 2049}, "input", "at most 2048"),
    ({"input": "word " * 300}, "input", "302 tokens long"),
    ({"input": ["ok", "word " * 300]}, "input[1]", "at most 256 tokens"),
    ({"input": 42}, "input", "expected a string"),
    ({"input": ["a", 1]}, "input[1]", "expected a string"),
    ({"input": [101, 99999]}, "input", "not in the vocabulary"),
    ({"input": "x", "dimensions": 128}, "dimensions", "does not support 'dimensions'"),
    ({"input": "x", "encoding_format": "int8"}, "encoding_format", "'float', 'base64'"),
])
def test_invalid_requests_are_400s(embed, kwargs, param, words):
    with pytest.raises(openai.BadRequestError) as caught:
        embed(**kwargs)
    error = caught.value.body
    assert caught.value.status_code == 400
    assert error["param"] == param
    assert words in error["message"]


def test_a_chat_model_asked_for_embeddings_is_a_400(embeddings_stack, client, model_id):
    with pytest.raises(openai.BadRequestError) as caught:
        client.embeddings.create(model=model_id, input="hello")
    assert "does not support embeddings" in caught.value.body["message"]


def test_an_embedding_model_asked_for_chat_is_a_400(embeddings_stack, client):
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=EMBEDDING_MODEL, messages=[{"role": "user", "content": "hi"}])
    assert "does not support chat completions" in caught.value.body["message"]


def test_an_unknown_model_is_a_404(embeddings_stack, client):
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="no-such-embedder", input="hello")


def test_malformed_json_is_a_400(embeddings_stack):
    response = httpx.post(f"{embeddings_stack.base_url}/v1/embeddings", content=b"{not json",
                          headers={"Content-Type": "application/json", **embeddings_stack.auth_headers}, timeout=30)
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_embeddings_are_charged_and_rate_limited_per_input_token(embeddings_stack, make_openai_client, registry_spec):
    from sqlalchemy import select

    from api.accounts import credits
    from api.store.models import UsageRecord

    account = embeddings_stack.create_account(credits="1", rate_limit_tokens=1000)
    client = make_openai_client(embeddings_stack, api_key=account.api_key, max_retries=0)
    raw = client.embeddings.with_raw_response.create(model=EMBEDDING_MODEL, input=SENTENCES[:3])
    tokens = raw.parse().usage.prompt_tokens
    assert int(raw.headers["x-ratelimit-remaining-tokens"]) == 1000 - tokens
    with embeddings_stack.db.transaction() as session:
        record = session.scalar(select(UsageRecord).where(UsageRecord.request_id == raw.headers["x-request-id"]))
    assert (record.endpoint, record.prompt_tokens, record.completion_tokens) == ("embeddings", tokens, 0)
    assert record.cost_micros == registry_spec.pricing.cost_micros(tokens, 0)
    assert credits.get_balance(embeddings_stack.db, account.user_id).balance_micros == 1_000_000 - record.cost_micros
    with pytest.raises(openai.RateLimitError) as refused:
        client.embeddings.create(model=EMBEDDING_MODEL, input=["word " * 200] * 6)  # more than is left
    assert refused.value.body["type"] == "tokens"
