"""The end-to-end stack: gunicorn (gevent, 2 processes), one worker with the real default model."""

from __future__ import annotations

import pytest

DEFAULT_MODEL = "smollm2-135m-instruct"
EMBEDDING_MODEL = "all-minilm-l6-v2"


@pytest.fixture(scope="session")
def model_id() -> str:
    return DEFAULT_MODEL


@pytest.fixture(scope="session")
def e2e_stack(stack_factory):
    stack = stack_factory(LLAMAGATE_MAX_BATCH_SIZE="8", LLAMAGATE_MAX_BODY_BYTES="1000000")
    stack.start_worker(DEFAULT_MODEL)
    stack.start_web(workers=2)
    stack.wait_ready(DEFAULT_MODEL, timeout=240)
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
