"""Chat completions through the official `openai` SDK, gunicorn+gevent, RabbitMQ, Redis and the real model."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def model_id(engine_model_id) -> str:
    """Every test here runs once per CPU engine, against the same weights."""
    return engine_model_id


# "Answer in one sentence.": the bare question is a near-tie between "The" and "L" on the Q4_1
# weights under llama.cpp's arithmetic (it answers "L'Étoile, …" alone); both engines answer this one.
FRANCE = [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}]


def test_capital_of_france_at_temperature_zero(client, model_id):
    completion = client.chat.completions.create(model=model_id, messages=FRANCE, temperature=0)

    assert completion.object == "chat.completion"
    assert completion.model == model_id
    assert completion.id.startswith("chatcmpl-")
    choice = completion.choices[0]
    assert choice.message.role == "assistant"
    assert "Paris" in choice.message.content
    assert choice.finish_reason == "stop"


def test_usage_adds_up(client, model_id):
    completion = client.chat.completions.create(model=model_id, messages=FRANCE, temperature=0)

    usage = completion.usage
    assert usage.prompt_tokens > 0
    assert usage.completion_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_streamed_text_equals_non_streamed_text(client, model_id):
    request = dict(model=model_id, temperature=0, max_tokens=40,
                   messages=[{"role": "user", "content": "Name three colours of the rainbow."}])
    whole = client.chat.completions.create(**request)
    chunks = list(client.chat.completions.create(stream=True, stream_options={"include_usage": True},
                                                 **request))

    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == whole.choices[0].message.content
    assert chunks[0].choices[0].delta.role == "assistant"
    assert {c.id for c in chunks} == {chunks[0].id} and {c.created for c in chunks} == {chunks[0].created}
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finish == [whole.choices[0].finish_reason]
    # The usage chunk comes last, with no choices, and counts what the whole response counted.
    assert chunks[-1].choices == []
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert chunks[-1].usage.prompt_tokens == whole.usage.prompt_tokens


def test_stream_without_include_usage_has_no_usage(client, model_id):
    chunks = list(client.chat.completions.create(model=model_id, messages=FRANCE, max_tokens=3, stream=True))

    assert all(c.usage is None for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "length"


def test_max_tokens_gives_finish_reason_length(client, model_id):
    completion = client.chat.completions.create(
        model=model_id, max_tokens=5, messages=[{"role": "user", "content": "Write a long poem about the sea."}])

    assert completion.choices[0].finish_reason == "length"
    assert 0 < completion.usage.completion_tokens <= 5


def test_max_completion_tokens_is_honoured(client, model_id):
    completion = client.chat.completions.create(
        model=model_id, max_completion_tokens=3,
        messages=[{"role": "user", "content": "Write a long poem about the sea."}])

    assert completion.choices[0].finish_reason == "length"
    assert completion.usage.completion_tokens <= 3


def test_stop_sequence_stops_generation(client, model_id):
    unconstrained = client.chat.completions.create(model=model_id, messages=FRANCE, temperature=0)
    text = unconstrained.choices[0].message.content
    assert " is " in text

    stopped = client.chat.completions.create(model=model_id, messages=FRANCE, temperature=0, stop=[" is "])

    assert stopped.choices[0].message.content == text[:text.index(" is ")]
    assert stopped.choices[0].finish_reason == "stop"
    assert stopped.usage.completion_tokens < unconstrained.usage.completion_tokens


def test_stop_sequence_in_a_stream(client, model_id):
    chunks = list(client.chat.completions.create(model=model_id, messages=FRANCE, temperature=0,
                                                 stop="Paris", stream=True))

    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert "Paris" not in text and text.startswith("The capital of France is")
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_several_choices(client, model_id):
    completion = client.chat.completions.create(model=model_id, messages=FRANCE, n=2, max_tokens=8,
                                                temperature=1.0, seed=7)

    assert [c.index for c in completion.choices] == [0, 1]
    assert all(c.message.content for c in completion.choices)
    # Usage counts the tokens of both choices (each at most max_tokens), and the prompt once.
    assert 2 <= completion.usage.completion_tokens <= 16
    single = client.chat.completions.create(model=model_id, messages=FRANCE, max_tokens=1)
    assert completion.usage.prompt_tokens == single.usage.prompt_tokens


def test_seed_makes_sampling_repeatable(client, model_id):
    request = dict(model=model_id, temperature=1.0, seed=1234, max_tokens=12,
                   messages=[{"role": "user", "content": "Tell me a fun fact."}])

    first = client.chat.completions.create(**request).choices[0].message.content
    second = client.chat.completions.create(**request).choices[0].message.content

    assert first == second


def test_eight_concurrent_requests_are_batched(client, model_id):
    topics = ["the sea", "mountains", "a cat", "the moon", "bread", "rain", "a library", "trains"]

    def ask(topic: str):
        started = time.monotonic()
        completion = client.chat.completions.create(
            model=model_id, temperature=0, max_tokens=24,
            messages=[{"role": "user", "content": f"Write one sentence about {topic}."}])
        return completion, started, time.monotonic()

    solo_started = time.monotonic()
    ask(topics[0])
    solo_seconds = time.monotonic() - solo_started

    started = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(ask, topics))
    wall = time.monotonic() - started

    for completion, _, _ in results:
        assert completion.choices[0].message.content
        assert completion.choices[0].finish_reason in ("stop", "length")
        assert completion.usage.completion_tokens <= 24
    # Served one after another, eight requests would take about eight solo times (llama.cpp on
    # two cores gains least from batching: its eight take about five solo times).
    assert wall < 0.8 * 8 * solo_seconds, f"8 concurrent took {wall:.1f}s, one alone {solo_seconds:.1f}s"
    # The client had all eight in flight at once (the wall-time bound above is what shows batching).
    first_end = min(end for _, _, end in results)
    assert all(start < first_end for _, start, _ in results)


def test_concurrent_answers_stay_correct(client, model_id):
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(
            lambda _: client.chat.completions.create(model=model_id, messages=FRANCE, temperature=0),
            range(8)))

    assert all("Paris" in a.choices[0].message.content for a in answers)
    assert len({a.id for a in answers}) == 8


def test_cancelled_streams_free_the_worker(client, model_id, e2e_stack, wait_until):
    cancellations_before = e2e_stack.logs(tail=10**6).count("job cancelled by its client")
    long_request = dict(model=model_id, max_tokens=2000, temperature=0.8, stream=True,
                        messages=[{"role": "user", "content": "Write a very long story about a dragon."}])
    # Fill every batch slot of the worker (batch size 8) with long streams, then walk away from them.
    streams = [client.chat.completions.create(**long_request) for _ in range(8)]
    for stream in streams:
        for _, _ in zip(range(3), stream):
            pass
    for stream in streams:
        stream.close()

    started = time.monotonic()
    first = client.chat.completions.create(model=model_id, messages=FRANCE, max_tokens=3, stream=True)
    next(iter(first))
    for _ in first:
        pass
    waited = time.monotonic() - started

    # Without cancellation the new request would wait for ~2000 more tokens in every slot (minutes).
    assert waited < 10, f"a new request waited {waited:.1f}s after the streams were cancelled"
    wait_until(lambda: e2e_stack.logs(tail=10**6).count("job cancelled by its client") >= cancellations_before + 8,
               timeout=10,
               message="the worker logged all 8 cancellations")


def test_responses_carry_a_request_id(e2e_stack, model_id):
    import httpx

    response = httpx.post(f"{e2e_stack.base_url}/v1/chat/completions", timeout=60, headers=e2e_stack.auth_headers,
                          json={"model": model_id, "messages": FRANCE, "max_tokens": 2})

    assert response.status_code == 200
    request_id = response.headers["x-request-id"]
    assert response.json()["id"] == f"chatcmpl-{request_id}"


def test_models_lists_the_served_model(client, model_id):
    models = client.models.list()

    assert model_id in [m.id for m in models.data]
    # The benchmark model is in the registry, but no worker serves it here.
    assert "llamagate-benchmark" not in [m.id for m in models.data]
    model = client.models.retrieve(model_id)
    assert model.id == model_id and model.object == "model" and model.owned_by


def test_retrieving_an_unknown_model_is_404(client):
    import openai

    with pytest.raises(openai.NotFoundError) as caught:
        client.models.retrieve("no-such-model")
    assert caught.value.body["code"] == "model_not_found"


def test_metrics_count_requests(e2e_stack, client, model_id):
    import httpx

    client.chat.completions.create(model=model_id, messages=FRANCE, max_tokens=2)
    body = httpx.get(f"{e2e_stack.base_url}/metrics", timeout=10).text

    assert 'llamagate_http_requests_total{endpoint="/v1/chat/completions",status="200"}' in body
    assert "llamagate_time_to_first_token_seconds_bucket" in body


def test_stream_while_other_threads_read(client, model_id):
    """Interleaved streams on one web process each get their own, complete answer."""
    results: dict[int, str] = {}

    def read(index: int) -> None:
        stream = client.chat.completions.create(model=model_id, messages=FRANCE, temperature=0, stream=True)
        results[index] = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)

    threads = [threading.Thread(target=read, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert len(results) == 4 and all("Paris" in text for text in results.values())
