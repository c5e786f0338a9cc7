"""The batcher: inputs of concurrent requests share forward passes, and each request gets its own
vectors back in its own order. The model and Redis are fakes here; tests/e2e runs the real ones."""

from __future__ import annotations

import dataclasses
import threading
import time

import numpy as np
import pytest

from broker.contracts import EmbeddingJob, EventKind, decode_vectors
from broker.event_publisher import PublishResult
from embeddings_worker.batcher import EmbeddingBatcher
from shared.registry import EmbeddingSpec

DIMS = 4


def expected_vector(ids) -> list[float]:
    """What the fake model makes of one input: depends on that input alone."""
    return [float(sum(ids)), float(len(ids)), float(ids[0]), float(ids[-1])]


class FakeEncoder:
    dimensions = DIMS
    vocab_size = 1000
    normalizes = False

    def __init__(self, spec, fail_on=None):
        self.spec = spec
        self.calls: list[list[tuple[int, ...]]] = []
        self.fail_on = fail_on  # a token id that makes a forward pass fail

    def load(self) -> None:
        pass

    def encode(self, inputs):
        self.calls.append([tuple(ids) for ids in inputs])
        if self.fail_on is not None and any(self.fail_on in ids for ids in inputs):
            raise RuntimeError("the model broke")
        return np.array([expected_vector(ids) for ids in inputs], dtype=np.float32)


class FakeRedis:
    def __init__(self):
        self.cancelled: set[str] = set()

    def mget(self, keys):
        return [b"1" if key.rsplit(":", 1)[-1] in self.cancelled else None for key in keys]


class FakePublisher:
    def __init__(self):
        self.client = FakeRedis()
        self.events = []
        self.lock = threading.Lock()

    def publish(self, events, reply_to, first_text=frozenset(), watch=()):
        with self.lock:
            for event in events:
                assert reply_to[event.request_id] == "chan"
                self.events.append(event)
        return PublishResult()

    def event_of(self, request_id):
        """The job's last event (DONE or ERROR), after checking that its events are numbered without gaps."""
        events = [e for e in self.events if e.request_id == request_id]
        assert [e.seq for e in events] == list(range(len(events)))
        assert events[-1].kind in (EventKind.DONE, EventKind.ERROR)
        assert all(e.kind == EventKind.STARTED for e in events[:-1])
        return events[-1]


@pytest.fixture
def spec(registry):
    return registry.get("all-minilm-l6-v2")


@pytest.fixture
def publisher():
    return FakePublisher()


@pytest.fixture
def make_batcher(publisher):
    batchers = []

    def make(encoder, batch_size=64, batch_wait=0.05) -> EmbeddingBatcher:
        batcher = EmbeddingBatcher(encoder, publisher, "worker-1", batch_size=batch_size, batch_wait=batch_wait)
        batcher.start()
        batchers.append(batcher)
        return batcher

    yield make
    for batcher in batchers:
        batcher.stop()


def job(request_id, inputs, **fields) -> EmbeddingJob:
    now = time.time()
    return EmbeddingJob(request_id=request_id, model="all-minilm-l6-v2",
                        inputs=tuple(tuple(ids) for ids in inputs), reply_to="chan",
                        start_by=now + 60, deadline=now + 120, **fields)


def vectors_of(event, rows) -> list[list[float]]:
    return [np.frombuffer(row, dtype="<f4").tolist() for row in decode_vectors(event.vectors, rows)]


def submit_concurrently(batcher, jobs) -> None:
    done = []
    threads = [threading.Thread(target=lambda j=j: done.append(batcher.submit(j))) for j in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for event in done:
        assert event.wait(10), "a job was never answered"


def test_concurrent_requests_share_forward_passes_and_get_their_own_vectors(spec, publisher, make_batcher):
    encoder = FakeEncoder(spec)
    batcher = make_batcher(encoder, batch_size=64, batch_wait=0.2)
    jobs = [job(f"r{n}", [[n + 1, n + 2, n + 3][: 1 + n % 3], [500 + n]]) for n in range(20)]
    submit_concurrently(batcher, jobs)

    assert len(encoder.calls) < len(jobs), "requests were not batched together"
    assert max(len(call) for call in encoder.calls) > 2
    for j in jobs:
        event = publisher.event_of(j.request_id)
        assert event.kind == EventKind.DONE
        assert vectors_of(event, 2) == [expected_vector(ids) for ids in j.inputs]
        tokens = sum(len(ids) for ids in j.inputs)
        assert event.usage == {"prompt_tokens": tokens, "total_tokens": tokens}


def test_a_request_larger_than_a_pass_keeps_its_order(spec, publisher, make_batcher):
    encoder = FakeEncoder(spec)
    batcher = make_batcher(encoder, batch_size=8, batch_wait=0.0)
    # Lengths vary so that sorting by length reorders the inputs across passes.
    inputs = [[n + 1] * (1 + (n * 7) % 5) for n in range(30)]
    assert batcher.submit(job("big", inputs)).wait(10)
    assert all(len(call) <= 8 for call in encoder.calls)
    assert sum(len(call) for call in encoder.calls) == 30
    assert vectors_of(publisher.event_of("big"), 30) == [expected_vector(ids) for ids in inputs]


def test_a_full_pass_does_not_wait_for_the_gathering_time(spec, publisher, make_batcher):
    batcher = make_batcher(FakeEncoder(spec), batch_size=4, batch_wait=30.0)
    started = time.monotonic()
    assert batcher.submit(job("full", [[1], [2], [3], [4]])).wait(10)
    assert time.monotonic() - started < 5


def test_a_lone_small_request_waits_only_the_gathering_time(spec, publisher, make_batcher):
    batcher = make_batcher(FakeEncoder(spec), batch_size=64, batch_wait=0.05)
    started = time.monotonic()
    assert batcher.submit(job("small", [[1]])).wait(10)
    assert time.monotonic() - started < 2


def test_identical_inputs_in_a_round_are_embedded_once(spec, publisher, make_batcher):
    encoder = FakeEncoder(spec)
    batcher = make_batcher(encoder, batch_wait=0.2)
    submit_concurrently(batcher, [job("a", [[5, 6], [7], [5, 6]]), job("b", [[5, 6]])])
    a, b = vectors_of(publisher.event_of("a"), 3), vectors_of(publisher.event_of("b"), 1)
    assert a[0] == a[2] == b[0] == expected_vector([5, 6])
    assert a[1] == expected_vector([7])
    assert sorted(ids for call in encoder.calls for ids in call) == [(5, 6), (7,)]


def test_a_failing_pass_fails_its_requests_and_the_batcher_goes_on(spec, publisher, make_batcher):
    encoder = FakeEncoder(spec, fail_on=666)
    batcher = make_batcher(encoder, batch_size=64, batch_wait=0.0)
    assert batcher.submit(job("bad", [[666]])).wait(10)
    error = publisher.event_of("bad")
    assert (error.kind, error.status, error.error["type"]) == (EventKind.ERROR, 500, "server_error")
    assert batcher.submit(job("good", [[7]])).wait(10)
    assert publisher.event_of("good").kind == EventKind.DONE


@pytest.mark.parametrize("inputs, code, param", [
    ([[1] * 257], "context_length_exceeded", "input"),
    ([[1], [1000]], None, "input"),  # outside the vocabulary
    ([[1], []], None, "input"),
])
def test_inputs_the_api_should_have_refused_are_refused_again(spec, publisher, make_batcher, inputs, code, param):
    encoder = FakeEncoder(spec)
    batcher = make_batcher(encoder, batch_wait=0.0)
    assert batcher.submit(job("wrong", inputs)).wait(10)
    event = publisher.event_of("wrong")
    assert (event.kind, event.status, event.error["code"], event.error["param"]) == \
        (EventKind.ERROR, 400, code, param)
    assert encoder.calls == []


def test_dimensions_are_refused_for_a_model_that_cannot_shorten(spec, publisher, make_batcher):
    batcher = make_batcher(FakeEncoder(spec), batch_wait=0.0)
    assert batcher.submit(job("short", [[1]], dimensions=2)).wait(10)
    assert publisher.event_of("short").status == 400


def test_shortened_vectors_keep_their_first_dimensions_at_unit_length(spec, publisher, make_batcher):
    shortenable = dataclasses.replace(spec, embedding=EmbeddingSpec(dimensions=DIMS, max_input_tokens=256,
                                                                    shortenable=True))
    encoder = FakeEncoder(shortenable)
    encoder.normalizes = True
    batcher = make_batcher(encoder, batch_wait=0.0)
    assert batcher.submit(job("short", [[3, 1]], dimensions=2)).wait(10)
    [vector] = vectors_of(publisher.event_of("short"), 1)
    assert vector == pytest.approx([4 / np.hypot(4, 2), 2 / np.hypot(4, 2)])


def test_cancelled_and_expired_requests_are_dropped_unanswered(spec, publisher, make_batcher):
    encoder = FakeEncoder(spec)
    publisher.client.cancelled.add("gone")
    batcher = make_batcher(encoder, batch_wait=0.0)
    assert batcher.submit(job("gone", [[1]])).wait(10)
    expired = dataclasses.replace(job("late", [[2]]), start_by=time.time() - 1)
    assert batcher.submit(expired).wait(10)
    assert publisher.events == []
    assert encoder.calls == []


def test_the_batcher_ticks_while_idle(spec, make_batcher):
    batcher = make_batcher(FakeEncoder(spec))
    time.sleep(0.7)
    assert batcher.seconds_since_tick() < 0.7


def test_a_started_job_is_announced_before_its_result(spec, publisher, make_batcher):
    batcher = make_batcher(FakeEncoder(spec), batch_wait=0.0)
    assert batcher.submit(job("r", [[1, 2]])).wait(10)
    started, done = publisher.events
    assert (started.kind, started.seq, started.worker_id) == (EventKind.STARTED, 0, "worker-1")
    assert (done.kind, done.seq) == (EventKind.DONE, 1)


def test_a_redelivered_job_numbers_its_events_as_a_new_attempt(spec, publisher, make_batcher):
    batcher = make_batcher(FakeEncoder(spec), batch_wait=0.0)
    assert batcher.submit(job("again", [[1]]), attempt=2).wait(10)
    assert [(e.kind, e.seq, e.attempt) for e in publisher.events] == [(EventKind.STARTED, 0, 2),
                                                                     (EventKind.DONE, 1, 2)]


def test_refused_jobs_get_only_their_error(spec, publisher, make_batcher):
    batcher = make_batcher(FakeEncoder(spec), batch_wait=0.0)
    assert batcher.submit(job("wrong", [[]])).wait(10)
    [error] = publisher.events
    assert (error.kind, error.seq) == (EventKind.ERROR, 0)
