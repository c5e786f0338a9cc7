"""The admission rules of an embeddings request that need no services: model, dimensions, input length."""

from __future__ import annotations

import pytest

from api.embeddings import admit_embeddings
from api.schemas.embeddings import parse_embeddings
from shared.embedding_tokenizer import EmbeddingTokenizer
from shared.errors import InvalidRequestError, ModelNotFoundError
from shared.settings import Settings
from shared.tokenizer_cache import prepare_tokenizer

M = "all-minilm-l6-v2"


class FakeRuntime:
    """What admission uses of a web process's Runtime: the registry and the tokenizers."""

    def __init__(self, registry):
        self.registry = registry
        self._tokenizers = {}

    def embedding_tokenizer(self, spec):
        if spec.id not in self._tokenizers:
            directory = prepare_tokenizer(spec.tokenizer, Settings.from_env({}).cache_dir)
            self._tokenizers[spec.id] = EmbeddingTokenizer.from_directory(directory)
        return self._tokenizers[spec.id]


@pytest.fixture(scope="module")
def runtime(registry):
    return FakeRuntime(registry)


def admit(runtime, **body):
    return admit_embeddings(runtime, parse_embeddings({"model": M, **body}))


def test_texts_are_tokenized_with_special_tokens(runtime):
    admission = admit(runtime, input=["hello world", "hello"])
    assert admission.inputs == [[101, 7592, 2088, 102], [101, 7592, 102]]
    assert admission.prompt_tokens == 7
    assert admission.spec.id == M


def test_token_ids_are_taken_as_given(runtime):
    admission = admit(runtime, input=[[101, 7592, 102], [2088]])
    assert admission.inputs == [[101, 7592, 102], [2088]]
    assert admission.prompt_tokens == 4


def test_an_input_at_the_limit_is_accepted(runtime):
    assert admit(runtime, input=[[7592] * 256]).prompt_tokens == 256


@pytest.mark.parametrize("body, param, words", [
    ({"input": ["ok", "word " * 300]}, "input[1]", "it is 302 tokens long"),
    ({"input": "word " * 255}, "input", "takes at most 256 tokens per input"),
    ({"input": [[7592] * 257]}, "input", "257 tokens"),
])
def test_too_long_inputs_are_refused_with_their_length(runtime, body, param, words):
    with pytest.raises(InvalidRequestError) as caught:
        admit(runtime, **body)
    error = caught.value
    assert (error.status, error.code, error.param) == (400, "context_length_exceeded", param)
    assert words in error.message


def test_token_ids_outside_the_vocabulary_are_refused(runtime):
    with pytest.raises(InvalidRequestError) as caught:
        admit(runtime, input=[101, 30522])
    assert (caught.value.status, caught.value.param) == (400, "input")
    assert "30522" in caught.value.message


def test_dimensions_the_model_cannot_shorten_to_are_refused(runtime):
    with pytest.raises(InvalidRequestError) as caught:
        admit(runtime, input="x", dimensions=128)
    assert (caught.value.status, caught.value.param) == (400, "dimensions")
    assert "384" in caught.value.message
    assert admit(runtime, input="x", dimensions=384).dimensions == 384  # its own size is no change


def test_a_chat_model_is_refused(runtime):
    with pytest.raises(InvalidRequestError) as caught:
        admit_embeddings(runtime, parse_embeddings({"model": "smollm2-135m-instruct", "input": "x"}))
    assert (caught.value.status, caught.value.param) == (400, "model")
    assert "does not support embeddings" in caught.value.message


def test_an_unknown_model_is_not_found(runtime):
    with pytest.raises(ModelNotFoundError):
        admit_embeddings(runtime, parse_embeddings({"model": "nope", "input": "x"}))
