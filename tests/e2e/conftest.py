"""The end-to-end stack: gunicorn (gevent, 2 processes), one worker with the real default model on
both CPU engines (llama.cpp, the default, and transformers under a model id of its own)."""

from __future__ import annotations

import pytest

DEFAULT_MODEL = "smollm2-135m-instruct"
EMBEDDING_MODEL = "all-minilm-l6-v2"
# The same weights on each CPU engine; the backbone tests run against both.
ENGINE_MODELS = {"llamacpp": DEFAULT_MODEL, "transformers": "smollm2-135m-instruct-transformers"}


@pytest.fixture(scope="session")
def model_id() -> str:
    return DEFAULT_MODEL


@pytest.fixture(scope="module", params=sorted(ENGINE_MODELS))
def engine_model_id(request) -> str:
    """The default model on each CPU engine in turn (tests using it run once per engine)."""
    return ENGINE_MODELS[request.param]


@pytest.fixture(scope="session")
def e2e_stack(stack_factory):
    stack = stack_factory(LLAMAGATE_MAX_BATCH_SIZE="8", LLAMAGATE_MAX_BODY_BYTES="1000000")
    stack.start_worker(",".join(ENGINE_MODELS.values()))
    stack.start_web(workers=2)
    for model in ENGINE_MODELS.values():
        stack.wait_ready(model, timeout=240)
    return stack


@pytest.fixture(scope="session")
def client(e2e_stack, make_openai_client):
    return make_openai_client(e2e_stack, timeout=120, max_retries=0)


@pytest.fixture(scope="session")
def embeddings_stack(e2e_stack):
    """The same stack with an embeddings worker for the default embedding model, added on first use."""
    e2e_stack.start_embeddings_worker(EMBEDDING_MODEL)
    e2e_stack.wait_ready(EMBEDDING_MODEL, timeout=240)
    return e2e_stack
