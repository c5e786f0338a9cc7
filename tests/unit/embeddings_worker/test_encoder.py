"""The encoder with the real all-MiniLM-L6-v2: fed the API's token ids, it gives what
sentence-transformers gives when called directly on the texts."""

from __future__ import annotations

import numpy as np
import pytest

from embeddings_worker.encoder import SentenceTransformerEncoder, shorten
from shared.embedding_tokenizer import EmbeddingTokenizer
from shared.settings import Settings
from shared.tokenizer_cache import prepare_tokenizer

TEXTS = [
    "The cat sits on the mat.",
    "A feline is resting on a rug.",
    "Quarterly revenue grew by twelve percent, driven by strong demand in Europe and Asia.",
    "Hi",
    "Ünïcödé, emoji 🚀 and punctuation — all in one sentence!",
]


@pytest.fixture(scope="module")
def spec(registry):
    return registry.get("all-minilm-l6-v2")


@pytest.fixture(scope="module")
def encoder(spec):
    encoder = SentenceTransformerEncoder(spec, Settings.from_env({}, embeddings_torch_threads=1))
    encoder.load()
    return encoder


@pytest.fixture(scope="module")
def tokenizer(spec):
    return EmbeddingTokenizer.from_directory(prepare_tokenizer(spec.tokenizer, Settings.from_env({}).cache_dir))


@pytest.fixture(scope="module")
def direct(spec):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(spec.weights.resolve()), device="cpu", local_files_only=True)


def test_the_model_is_described_as_the_registry_says(encoder, spec):
    assert encoder.dimensions == spec.embedding.dimensions == 384
    assert encoder.normalizes
    assert encoder.vocab_size == 30522


def test_the_api_tokenizes_as_sentence_transformers_does(tokenizer, direct):
    features = direct.tokenize(TEXTS)
    for row, ids in enumerate(tokenizer.encode_batch(TEXTS)):
        mask = features["attention_mask"][row].bool()
        assert ids == features["input_ids"][row][mask].tolist()


def test_the_api_sees_the_true_length_of_long_inputs(tokenizer, direct):
    [ids] = tokenizer.encode_batch(["word " * 400])
    assert len(ids) == 402  # [CLS] + 400 + [SEP]: not cut at the tokenizer file's 128, nor at 256
    assert direct.max_seq_length == 256


def test_vectors_match_sentence_transformers_called_directly(encoder, tokenizer, direct):
    served = encoder.encode(tokenizer.encode_batch(TEXTS))
    expected = direct.encode(TEXTS, convert_to_numpy=True)
    assert served.shape == expected.shape == (len(TEXTS), 384)
    assert served.dtype == np.float32
    cosine = np.sum(served * expected, axis=1) / (np.linalg.norm(served, axis=1) * np.linalg.norm(expected, axis=1))
    assert cosine.min() > 0.9999
    assert np.linalg.norm(served, axis=1) == pytest.approx(np.ones(len(TEXTS)), abs=1e-5)


def test_identical_inputs_give_identical_vectors(encoder, tokenizer):
    ids = tokenizer.encode_batch(["same words", "other words that are longer", "same words"])
    vectors = encoder.encode(ids)
    assert np.array_equal(vectors[0], vectors[2])
    alone = encoder.encode(ids[:1])
    assert np.allclose(alone[0], vectors[0], atol=1e-6)  # other padding, the same vector


def test_shorten_cuts_and_renormalizes():
    vectors = np.array([[3.0, 4.0, 12.0]], dtype=np.float32)
    assert shorten(vectors, 2, normalize=True).tolist() == [[0.6000000238418579, 0.800000011920929]]
    assert shorten(vectors, 2, normalize=False).tolist() == [[3.0, 4.0]]
