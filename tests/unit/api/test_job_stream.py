"""JobStream: a job's events in order, and every way of waiting forever turned into an error in time."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import gevent.queue
import pytest

from api.job_stream import DEADLINE_GRACE, ClientDisconnected, JobStream
from broker.contracts import EventKind, GenerationJob, JobEvent, SamplingParams
from broker.event_router import TRANSPORT_LOST
from shared.errors import (LlamaGateError, ModelUnavailableError, RequestTimeoutError, ServerError,
                           ServiceUnavailableError)

MODEL = "smollm2-135m-instruct"
REQUEST_ID = "req-1"
TICK = 0.01
WORKER_WAIT = 0.05
USAGE = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}


@dataclass
class FakeDirectory:
    """The part of WorkerDirectory a JobStream reads: a snapshot of live workers and their models."""

    fresh: bool = True
    workers: dict[str, tuple[str, ...]] = field(default_factory=lambda: {"w1": (MODEL,), "w2": (MODEL,)})

    def workers_for(self, model_id: str) -> list[str]:
        return [w for w, models in self.workers.items() if model_id in models]

    def is_alive(self, worker_id: str) -> bool:
        return worker_id in self.workers


def make_job(**fields) -> GenerationJob:
    now = time.time()
    defaults = dict(request_id=REQUEST_ID, model=MODEL, messages=({"role": "user", "content": "Hi"},),
                    sampling=SamplingParams(), reply_to="llg:events:test", start_by=now + 60,
                    deadline=now + 600)
    return GenerationJob(**{**defaults, **fields})


def started(seq=0, attempt=1, worker="w1") -> JobEvent:
    return JobEvent(REQUEST_ID, EventKind.STARTED, seq, attempt=attempt, worker_id=worker)


def delta(seq, text="Hi", attempt=1) -> JobEvent:
    return JobEvent(REQUEST_ID, EventKind.DELTA, seq, attempt=attempt, text=text, tokens=1)


def finish(seq, attempt=1, reason="stop") -> JobEvent:
    return JobEvent(REQUEST_ID, EventKind.FINISH, seq, attempt=attempt, finish_reason=reason)


def done(seq, attempt=1) -> JobEvent:
    return JobEvent(REQUEST_ID, EventKind.DONE, seq, attempt=attempt, usage=USAGE)


def full_run(attempt=1, worker="w1", text="Hi") -> list[JobEvent]:
    return [started(0, attempt, worker), delta(1, text, attempt), finish(2, attempt), done(3, attempt)]


class Harness:
    def __init__(self, job=None, directory=None, client_gone=lambda: False):
        self.queue: gevent.queue.Queue = gevent.queue.Queue()
        self.directory = directory or FakeDirectory()
        self.stream = JobStream(job or make_job(), self.queue, self.directory, tick=TICK,
                                worker_wait_timeout=WORKER_WAIT, client_gone=client_gone)

    def feed(self, *items) -> "Harness":
        for item in items:
            self.queue.put(item)
        return self

    def read(self, limit: float = 2.0) -> list[JobEvent]:
        """Every event the stream yields (quiet ticks left out), bounded so a bug cannot hang the suite."""
        events = []
        deadline = time.monotonic() + limit
        for event in self.stream.events():
            if event is not None:
                events.append(event)
            assert time.monotonic() < deadline, "the stream neither ended nor failed in time"
        return events


@pytest.fixture
def harness() -> Harness:
    return Harness()


def test_normal_sequence_is_yielded_in_order(harness):
    events = harness.feed(*full_run()).read()
    assert [e.kind for e in events] == ["started", "delta", "finish", "done"]
    assert events[1].text == "Hi"
    assert harness.stream.finished
    assert harness.stream.worker_id == "w1"
    assert harness.stream.usage == USAGE
    assert harness.stream.content_seen


def test_stream_ends_at_done_and_leaves_later_items_unread(harness):
    harness.feed(*full_run(), delta(4))
    assert len(harness.read()) == 4
    assert harness.queue.qsize() == 1


def test_quiet_ticks_yield_none(harness):
    harness.feed(started())
    events = harness.stream.events()
    assert next(events).kind == EventKind.STARTED
    assert next(events) is None  # nothing arrived for a tick: the caller may send a keep-alive
    harness.feed(delta(1), finish(2), done(3))
    assert [e.kind for e in events if e is not None] == ["delta", "finish", "done"]


def test_several_choices_are_passed_through(harness):
    harness.feed(started(), JobEvent(REQUEST_ID, EventKind.DELTA, 1, index=1, text="b"),
                 JobEvent(REQUEST_ID, EventKind.DELTA, 2, index=0, text="a"), finish(3), done(4))
    assert [(e.index, e.text) for e in harness.read() if e.kind == EventKind.DELTA] == [(1, "b"), (0, "a")]


@pytest.mark.parametrize("events", [
    [started(0), delta(2)],
    [started(1)],
    [started(0), delta(1), delta(1)],
])
def test_sequence_gap_is_a_server_error(harness, events):
    with pytest.raises(ServerError) as caught:
        harness.feed(*events).read()
    assert caught.value.status == 500
    assert "lost" in caught.value.message


def test_error_event_raises_the_workers_error():
    harness = Harness().feed(started(), JobEvent(
        REQUEST_ID, EventKind.ERROR, 1, status=400,
        error={"message": "too long", "type": "invalid_request_error", "param": "messages",
               "code": "context_length_exceeded"}))
    with pytest.raises(LlamaGateError) as caught:
        harness.read()
    error = caught.value
    assert (error.status, error.type, error.code, error.param, error.message) == (
        400, "invalid_request_error", "context_length_exceeded", "messages", "too long")
    assert harness.stream.finished


def test_error_event_without_status_is_a_500():
    harness = Harness().feed(JobEvent(REQUEST_ID, EventKind.ERROR, 0, error={"message": "boom"}))
    with pytest.raises(LlamaGateError) as caught:
        harness.read()
    assert caught.value.status == 500
    assert caught.value.type == "server_error"


def test_lost_transport_is_service_unavailable(harness):
    with pytest.raises(ServiceUnavailableError) as caught:
        harness.feed(started(), TRANSPORT_LOST).read()
    assert caught.value.status == 503


def test_second_attempt_before_any_content_starts_over(harness):
    # The first worker died after STARTED; RabbitMQ redelivered the job to another worker.
    events = harness.feed(started(0, attempt=1, worker="w1"), *full_run(attempt=2, worker="w2")).read()
    assert [e.kind for e in events] == ["started", "started", "delta", "finish", "done"]
    assert harness.stream.worker_id == "w2"
    assert harness.stream.usage == USAGE


def test_late_events_of_a_superseded_attempt_are_ignored(harness):
    harness.feed(started(0, attempt=1), started(0, attempt=2, worker="w2"), finish(1, attempt=1),
                 delta(1, "new", attempt=2), finish(2, attempt=2), done(3, attempt=2))
    events = harness.read()
    assert all(e.attempt == 2 for e in events[1:])
    assert [e.text for e in events if e.kind == EventKind.DELTA] == ["new"]


def test_second_attempt_after_content_is_a_server_error(harness):
    harness.feed(started(0, attempt=1), delta(1, attempt=1), started(0, attempt=2, worker="w2"))
    with pytest.raises(ServerError, match="failed"):
        harness.read()


def test_worker_dying_after_content_is_a_server_error(harness):
    events = harness.feed(started(), delta(1)).stream.events()
    assert [next(events).kind, next(events).kind] == ["started", "delta"]
    del harness.directory.workers["w1"]
    with pytest.raises(ServerError, match="stopped"):
        list(events)


def test_worker_dying_before_content_waits_for_redelivery(harness):
    events = harness.feed(started(0, attempt=1, worker="w1")).stream.events()
    assert next(events).kind == "started"
    del harness.directory.workers["w1"]
    assert next(events) is None
    assert harness.stream.worker_id is None  # forgotten: the job is expected back on another worker
    harness.feed(*full_run(attempt=2, worker="w2"))
    assert [e.kind for e in events if e is not None] == ["started", "delta", "finish", "done"]
    assert harness.stream.worker_id == "w2"


def test_dead_worker_is_not_judged_on_a_stale_directory(harness):
    harness.directory.fresh = False
    harness.directory.workers.clear()
    events = harness.feed(started(), delta(1)).stream.events()
    assert [next(events).kind, next(events).kind] == ["started", "delta"]
    assert [next(events) for _ in range(5)] == [None] * 5
    harness.feed(finish(2), done(3))
    assert [e.kind for e in events if e is not None] == ["finish", "done"]


def test_no_worker_for_the_model_is_model_unavailable():
    harness = Harness(directory=FakeDirectory(workers={"w9": ("another-model",)}))
    started_at = time.monotonic()
    with pytest.raises(ModelUnavailableError) as caught:
        harness.read()
    waited = time.monotonic() - started_at
    assert caught.value.status == 503 and caught.value.code == "model_unavailable"
    assert MODEL in caught.value.message
    assert WORKER_WAIT <= waited < WORKER_WAIT + 1.0


def test_worker_gap_shorter_than_the_wait_timeout_is_tolerated():
    harness = Harness(directory=FakeDirectory(workers={}))
    events = harness.stream.events()
    assert next(events) is None  # no worker, for one tick only
    harness.directory.workers["w1"] = (MODEL,)
    time.sleep(WORKER_WAIT * 2)
    assert next(events) is None  # a worker is back: the clock restarted
    harness.directory.workers.clear()
    assert next(events) is None  # gone again, but not for long enough yet
    harness.directory.workers["w1"] = (MODEL,)
    harness.feed(*full_run())
    assert [e.kind for e in events if e is not None] == ["started", "delta", "finish", "done"]


def test_stale_directory_does_not_declare_the_model_unavailable():
    harness = Harness(directory=FakeDirectory(fresh=False, workers={}))
    events = harness.stream.events()
    deadline = time.monotonic() + WORKER_WAIT * 3
    while time.monotonic() < deadline:
        assert next(events) is None


def test_job_not_started_by_its_start_by_is_a_timeout():
    harness = Harness(job=make_job(start_by=time.time() - 1))
    with pytest.raises(RequestTimeoutError) as caught:
        harness.read()
    assert caught.value.status == 503 and caught.value.code == "timeout"


def test_started_job_is_not_held_to_start_by():
    harness = Harness(job=make_job(start_by=time.time() + 0.02))
    events = harness.feed(started()).stream.events()
    assert next(events).kind == "started"
    time.sleep(0.05)
    harness.feed(delta(1), finish(2), done(3))
    assert [e.kind for e in events if e is not None] == ["delta", "finish", "done"]


def test_job_running_past_its_deadline_is_a_timeout():
    harness = Harness(job=make_job(deadline=time.time() - DEADLINE_GRACE - 1))
    harness.feed(started(), delta(1))
    with pytest.raises(RequestTimeoutError, match="time limit"):
        harness.read()


def test_job_within_its_deadline_grace_keeps_waiting():
    harness = Harness(job=make_job(deadline=time.time() - DEADLINE_GRACE / 2))
    events = harness.feed(started()).stream.events()
    assert next(events).kind == "started"
    assert next(events) is None


def test_gone_client_is_client_disconnected():
    gone = False
    harness = Harness(client_gone=lambda: gone)
    events = harness.feed(started()).stream.events()
    assert next(events).kind == "started"
    assert next(events) is None
    gone = True
    with pytest.raises(ClientDisconnected):
        next(events)
    assert not harness.stream.finished


def test_client_leaving_is_noticed_while_events_keep_flowing():
    harness = Harness(client_gone=lambda: True)
    harness.feed(started())

    def trickle():
        seq = 1
        while True:
            harness.feed(delta(seq))
            seq += 1
            gevent.sleep(TICK / 4)

    feeder = gevent.spawn(trickle)
    try:
        with pytest.raises(ClientDisconnected):
            harness.read(limit=1.0)
    finally:
        feeder.kill()

