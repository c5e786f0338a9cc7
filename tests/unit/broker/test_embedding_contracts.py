"""The embeddings part of the wire contract: jobs and their vectors survive the trip unchanged."""

from __future__ import annotations

import base64
import struct

import numpy as np
import orjson
import pytest

from broker.contracts import (CONTRACT_VERSION, ContractError, EmbeddingJob, EventKind, JobEvent, decode_event_batch,
                              decode_vectors, encode_event_batch, encode_vectors, vector_floats)


def make_job(**fields) -> EmbeddingJob:
    defaults = dict(request_id="req-1", model="all-minilm-l6-v2", inputs=((101, 7592, 102), (101, 2088, 999, 102)),
                    reply_to="llg:events:web-1", dimensions=None, enqueued_at=1700000000.5,
                    start_by=1700000060.5, deadline=1700000660.5)
    return EmbeddingJob(**{**defaults, **fields})


def over_the_wire(payload: dict) -> dict:
    return orjson.loads(orjson.dumps(payload))


def test_job_round_trips_through_json():
    job = make_job(dimensions=128)
    payload = over_the_wire(job.to_payload())
    assert payload["version"] == CONTRACT_VERSION
    assert payload["inputs"] == [[101, 7592, 102], [101, 2088, 999, 102]]
    assert EmbeddingJob.from_payload(payload) == job


@pytest.mark.parametrize("payload", [
    "not an object",
    {"version": CONTRACT_VERSION + 1},
    {"version": CONTRACT_VERSION, "request_id": "r"},  # fields missing
    {**make_job().to_payload(), "surprise": 1},
    {**make_job().to_payload(), "inputs": 5},
])
def test_malformed_jobs_are_refused(payload):
    with pytest.raises(ContractError):
        EmbeddingJob.from_payload(payload)


def test_vectors_are_little_endian_float32_rows():
    matrix = np.array([[0.5, -1.25, 3.0], [1e-3, 0.0, -7.5]], dtype="<f4")
    rows = decode_vectors(encode_vectors(matrix.tobytes()), rows=2)
    assert rows == [matrix[0].tobytes(), matrix[1].tobytes()]
    assert rows[0] == struct.pack("<3f", 0.5, -1.25, 3.0)
    assert vector_floats(rows[1]) == pytest.approx([1e-3, 0.0, -7.5])
    # OpenAI's base64 format is the same bytes, one row at a time.
    assert np.frombuffer(base64.b64decode(base64.b64encode(rows[1])), dtype="<f4").tolist() == \
        matrix[1].tolist()


@pytest.mark.parametrize("raw, rows", [(b"\0" * 12, 2), (b"\0" * 8, 0), (b"\0" * 6, 1)])
def test_vectors_that_do_not_split_into_rows_are_refused(raw, rows):
    with pytest.raises(ContractError):
        decode_vectors(encode_vectors(raw), rows)


def test_done_event_carries_vectors_and_usage():
    vectors = encode_vectors(np.arange(6, dtype="<f4").tobytes())
    event = JobEvent(request_id="r", kind=EventKind.DONE, seq=0, usage={"prompt_tokens": 7, "total_tokens": 7},
                     vectors=vectors)
    [restored] = decode_event_batch(encode_event_batch([event]))
    assert restored == event


def test_events_without_vectors_do_not_carry_the_field():
    event = JobEvent(request_id="r", kind=EventKind.DELTA, seq=1, text="hi")
    assert "x" not in event.to_wire()
    assert decode_event_batch(encode_event_batch([event]))[0].vectors is None
