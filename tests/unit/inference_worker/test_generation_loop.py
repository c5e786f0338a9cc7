"""GenerationLoop driven by the benchmark engine: the events each job publishes, and every way a job ends."""

from __future__ import annotations

import dataclasses
import threading
import time
from typing import Callable, Optional

import pytest
import redis

from broker.contracts import EventKind, GenerationJob, JobEvent, SamplingParams
from broker.event_publisher import PublishResult
from inference_worker.engines.benchmark import WORDS, BenchmarkEngine
from inference_worker.generation_loop import GenerationLoop
from shared.settings import Settings

WORKER_ID = "worker-1"
MESSAGES = ({"role": "user", "content": "Count to three."},)
WAIT = 5.0  # seconds any single job may take here; they take milliseconds


def benchmark_text(tokens: int) -> str:
    return "".join(WORDS[i % len(WORDS)] for i in range(tokens))


class FakePublisher:
    """Records every published batch; can pretend nobody listens, that clients cancelled, fail,
    or act as events go out."""

    def __init__(self) -> None:
        self.batches: list[tuple[list[JobEvent], dict[str, str], set[str]]] = []
        self.unheard: set[str] = set()
        self.cancelled: set[str] = set()
        self.watched: list[str] = []
        self.failing = False
        self.on_publish: Optional[Callable[[list[JobEvent]], None]] = None
        self.final_usage: dict[str, dict[str, int]] = {}

    def publish(self, events, reply_to, first_text=frozenset(), watch=(), final_usage=None):
        self.batches.append((list(events), dict(reply_to), set(first_text)))
        self.final_usage.update(final_usage or {})
        self.watched.extend(watch)
        if self.on_publish is not None:
            self.on_publish(events)
        if self.failing:
            raise redis.ConnectionError("Redis went away")
        return PublishResult(unheard={e.request_id for e in events} & self.unheard,
                             cancelled=set(watch) & self.cancelled)

    def events(self, request_id: str) -> list[JobEvent]:
        return [e for events, _, _ in self.batches for e in events if e.request_id == request_id]


class FlakyEngine(BenchmarkEngine):
    """Fails its next step once when told to."""

    fail_next = False

    def step(self):
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return super().step()


def make_job(request_id: str = "req-1", *, max_tokens: int = 5, n: int = 1, stop: tuple[str, ...] = (),
             messages=MESSAGES, deadline: Optional[float] = None) -> GenerationJob:
    now = time.time()
    return GenerationJob(request_id=request_id, model="llamagate-benchmark", messages=messages,
                         sampling=SamplingParams(max_tokens=max_tokens, stop=stop),
                         reply_to=f"llg:events:web-{request_id}", n=n, enqueued_at=now, start_by=now + 60,
                         deadline=now + 60 if deadline is None else deadline)


@dataclasses.dataclass
class Worker:
    loop: GenerationLoop
    engine: BenchmarkEngine
    publisher: FakePublisher

    def run(self, job: GenerationJob, attempt: int = 1) -> list[JobEvent]:
        """Submit `job`, wait until it has ended, and return its events."""
        assert self.loop.submit(job, attempt).wait(WAIT), "the job did not end"
        return self.publisher.events(job.request_id)


@pytest.fixture
def make_worker(benchmark_spec, chat_tokenizer):
    loops: list[GenerationLoop] = []

    def make(engine_class=BenchmarkEngine, spec=benchmark_spec, **settings) -> Worker:
        engine = engine_class(spec, Settings.from_env({}, **settings), chat_tokenizer)
        publisher = FakePublisher()
        loop = GenerationLoop(engine, publisher, WORKER_ID)  # type: ignore[arg-type]
        loops.append(loop)
        loop.start()
        return Worker(loop, engine, publisher)

    yield make
    for loop in loops:
        loop.stop()


@pytest.fixture
def worker(make_worker) -> Worker:
    return make_worker()


def kinds(events: list[JobEvent]) -> list[str]:
    return [e.kind for e in events]


def text_of(events: list[JobEvent], index: int = 0) -> str:
    return "".join(e.text for e in events if e.kind == EventKind.DELTA and e.index == index)


# --- a job that runs to its end -----------------------------------------------------------------

def test_events_are_numbered_from_zero_without_gaps(worker):
    events = worker.run(make_job(max_tokens=6))
    assert [e.seq for e in events] == list(range(len(events)))


def test_started_comes_first_and_done_last(worker):
    events = worker.run(make_job(max_tokens=6))
    assert kinds(events) == ["started"] + ["delta"] * 6 + ["finish", "done"]
    assert events[0].worker_id == WORKER_ID


def test_events_carry_the_attempt(worker):
    events = worker.run(make_job(), attempt=3)
    assert {e.attempt for e in events} == {3}


def test_text_and_finish_reason_length(worker):
    events = worker.run(make_job(max_tokens=12))
    assert text_of(events) == benchmark_text(12)
    assert [e.finish_reason for e in events if e.kind == EventKind.FINISH] == ["length"]


def test_usage_adds_up(worker, chat_tokenizer):
    events = worker.run(make_job(max_tokens=7))
    usage = events[-1].usage
    assert usage == {"prompt_tokens": len(chat_tokenizer.prompt_ids(MESSAGES)), "completion_tokens": 7,
                     "total_tokens": len(chat_tokenizer.prompt_ids(MESSAGES)) + 7}
    assert sum(e.tokens for e in events if e.kind == EventKind.DELTA) == usage["completion_tokens"]


def test_two_choices(worker):
    events = worker.run(make_job(max_tokens=4, n=2))
    assert text_of(events, 0) == text_of(events, 1) == benchmark_text(4)
    assert sorted(e.index for e in events if e.kind == EventKind.FINISH) == [0, 1]
    assert kinds(events).count("done") == 1 and events[-1].kind == EventKind.DONE
    assert events[-1].usage["completion_tokens"] == 8  # OpenAI counts the tokens of every choice
    assert [e.seq for e in events] == list(range(len(events)))


def test_stop_string_ends_the_choice(worker):
    events = worker.run(make_job(max_tokens=50, stop=(" fox",)))
    assert text_of(events) == " The quick brown"
    assert [e.finish_reason for e in events if e.kind == EventKind.FINISH] == ["stop"]
    assert events[-1].usage["completion_tokens"] == 4


def test_events_go_to_the_jobs_web_process(worker):
    job = make_job()
    worker.run(job)
    for _, reply_to, _ in worker.publisher.batches:
        assert reply_to == {job.request_id: job.reply_to}


def test_first_text_is_marked_once_with_the_first_delta(worker):
    worker.run(make_job(max_tokens=5))
    batches = worker.publisher.batches
    marked = [i for i, (_, _, first_text) in enumerate(batches) if "req-1" in first_text]
    first_delta = next(i for i, (events, _, _) in enumerate(batches) if EventKind.DELTA in kinds(events))
    assert marked == [first_delta]


def test_concurrent_jobs_keep_their_own_numbering(worker):
    jobs = [make_job(f"req-{i}", max_tokens=3 + i) for i in range(3)]
    done = [worker.loop.submit(job, 1) for job in jobs]
    assert all(d.wait(WAIT) for d in done)
    for i, job in enumerate(jobs):
        events = worker.publisher.events(job.request_id)
        assert [e.seq for e in events] == list(range(len(events)))
        assert text_of(events) == benchmark_text(3 + i)
        assert events[-1].kind == EventKind.DONE


def test_loop_is_idle_after_a_job(worker):
    worker.run(make_job())
    assert not worker.engine.has_work


# --- cancellation, abandonment, failures ----------------------------------------------------------

# Results from Redis reach the loop asynchronously (through the outbox), so a job is dropped a
# few steps after its client left, long before a job this long could end by itself.
ENDLESS = 8_000  # as long as the benchmark model's context allows


def assert_stopped_early(events: list[JobEvent]) -> None:
    assert EventKind.DONE not in kinds(events) and EventKind.FINISH not in kinds(events)
    assert len([e for e in events if e.kind == EventKind.DELTA]) < ENDLESS


def cancel_at_third_delta(worker, request_id: str = "req-1") -> None:
    """Make the client of `request_id` cancel once three of its deltas have been published."""
    def on_publish(events):
        if len([e for e in worker.publisher.events(request_id) if e.kind == EventKind.DELTA]) >= 3:
            worker.publisher.cancelled.add(request_id)

    worker.publisher.on_publish = on_publish


def test_cancel_stops_a_running_job(worker):
    cancel_at_third_delta(worker)
    events = worker.run(make_job(max_tokens=ENDLESS))
    assert_stopped_early(events)
    assert len([e for e in events if e.kind == EventKind.DELTA]) >= 3
    assert not worker.engine.has_work


def wait_for_final_usage(worker, request_id: str) -> dict[str, int]:
    deadline = time.monotonic() + WAIT
    while request_id not in worker.publisher.final_usage and time.monotonic() < deadline:
        time.sleep(0.01)
    return worker.publisher.final_usage[request_id]


def test_a_cancelled_job_reports_what_it_generated(worker):
    cancel_at_third_delta(worker)
    events = worker.run(make_job(max_tokens=ENDLESS))
    usage = wait_for_final_usage(worker, "req-1")
    generated = sum(e.tokens for e in events if e.kind == EventKind.DELTA)
    assert usage["completion_tokens"] >= generated >= 3
    assert usage["prompt_tokens"] > 0


def test_an_unheard_job_reports_what_it_generated(worker):
    worker.publisher.unheard.add("req-1")
    worker.run(make_job(max_tokens=ENDLESS))
    assert wait_for_final_usage(worker, "req-1")["completion_tokens"] >= 1


def test_a_finished_job_leaves_no_separate_usage_report(worker):
    worker.run(make_job(max_tokens=4))
    assert worker.publisher.final_usage == {}  # its DONE event carries the usage


def test_a_cancel_of_another_request_changes_nothing(worker):
    worker.publisher.cancelled.add("nobody")
    assert kinds(worker.run(make_job()))[-1] == EventKind.DONE


def test_a_job_cancelled_before_it_started_is_dropped_soon_after_admission(worker):
    worker.publisher.cancelled.add("req-1")
    events = worker.run(make_job(max_tokens=ENDLESS))
    assert "req-1" in worker.publisher.watched
    assert kinds(events)[0] == "started"
    assert_stopped_early(events)
    assert not worker.engine.has_work


def test_unheard_job_is_aborted(worker):
    worker.publisher.unheard.add("req-1")
    events = worker.run(make_job(max_tokens=ENDLESS))
    assert_stopped_early(events)
    assert not worker.engine.has_work


def test_unheard_job_leaves_other_jobs_running(worker):
    worker.publisher.unheard.add("gone")
    gone, kept = make_job("gone", max_tokens=ENDLESS), make_job("kept", max_tokens=20)
    done = [worker.loop.submit(gone, 1), worker.loop.submit(kept, 1)]
    assert all(d.wait(WAIT) for d in done)
    assert_stopped_early(worker.publisher.events("gone"))
    assert text_of(worker.publisher.events("kept")) == benchmark_text(20)


def test_failed_publish_drops_the_job(worker):
    worker.publisher.failing = True
    events = worker.run(make_job(max_tokens=ENDLESS))
    assert_stopped_early(events)
    assert not worker.engine.has_work


def test_the_actor_is_released_only_once_the_last_event_is_out(worker):
    released_before_done_was_published = []

    def check(events):
        if any(e.kind == EventKind.DONE for e in events):
            released_before_done_was_published.append(done.is_set())

    worker.publisher.on_publish = check
    done = worker.loop.submit(make_job(max_tokens=5), 1)
    assert done.wait(WAIT)
    assert released_before_done_was_published == [False]


def test_prompt_and_max_tokens_beyond_the_context_is_an_error(worker, benchmark_spec):
    events = worker.run(make_job(max_tokens=benchmark_spec.context_length))
    assert kinds(events) == ["error"]
    assert events[0].seq == 0
    assert events[0].status == 400
    assert events[0].error["code"] == "context_length_exceeded"
    assert events[0].error["param"] == "messages"
    assert not worker.engine.has_work


def test_job_that_exactly_fills_the_context_runs(make_worker, benchmark_spec, chat_tokenizer):
    room = 12
    spec = dataclasses.replace(benchmark_spec, context_length=len(chat_tokenizer.prompt_ids(MESSAGES)) + room)
    worker = make_worker(spec=spec)
    assert kinds(worker.run(make_job(max_tokens=room)))[-1] == EventKind.DONE
    assert kinds(worker.run(make_job("req-2", max_tokens=room + 1))) == ["error"]


def test_chat_template_failure_is_the_requests_error(worker):
    events = worker.run(make_job(messages=({"content": "no role"},)))
    assert kinds(events) == ["error"]
    assert events[0].status == 400 and events[0].error["param"] == "messages"


def test_images_for_an_engine_without_vision_are_the_requests_error(worker):
    from PIL import Image

    from shared.images import DecodedImage

    job = make_job(messages=({"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What?"}]},))
    assert worker.loop.submit(job, 1, [DecodedImage(Image.new("RGB", (4, 4)), "PNG")]).wait(WAIT)
    events = worker.publisher.events(job.request_id)
    assert kinds(events) == ["error"]
    assert events[0].status == 400 and "does not accept images" in events[0].error["message"]
    assert not worker.engine.has_work


def test_job_past_its_deadline_times_out(worker):
    events = worker.run(make_job(max_tokens=1000, deadline=time.time() - 1))
    assert kinds(events) == ["started", "error"]
    assert events[-1].status == 503 and events[-1].error["code"] == "timeout"


def test_deadline_ends_a_running_job(make_worker):
    worker = make_worker(benchmark_step_ms=2.0)
    started = time.monotonic()
    events = worker.run(make_job(max_tokens=5000, deadline=time.time() + 0.2))
    assert time.monotonic() - started < 2.0
    assert kinds(events)[0] == "started" and kinds(events)[-1] == "error"
    assert 0 < kinds(events).count("delta") < 5000
    assert [e.seq for e in events] == list(range(len(events)))
    assert events[-1].error["code"] == "timeout"


def test_duplicate_delivery_of_a_running_job_is_ignored(worker):
    job = make_job(max_tokens=2000)  # long enough to be running still when the duplicate arrives
    duplicate_done: list[threading.Event] = []

    def redeliver_once(events):
        if not duplicate_done and EventKind.STARTED in kinds(events):
            duplicate_done.append(worker.loop.submit(job, 2))

    worker.publisher.on_publish = redeliver_once
    events = worker.run(job)
    assert duplicate_done[0].wait(WAIT)
    assert kinds(events).count("started") == 1
    assert {e.attempt for e in events} == {1}
    assert text_of(events) == benchmark_text(2000)


def test_engine_failure_fails_the_batch_and_the_loop_survives(make_worker):
    worker = make_worker(engine_class=FlakyEngine)
    worker.engine.fail_next = True
    events = worker.run(make_job("first"))
    assert kinds(events) == ["started", "error"]
    assert events[-1].status == 500 and events[-1].error["type"] == "server_error"
    assert kinds(worker.run(make_job("second")))[-1] == EventKind.DONE


def test_stopping_the_loop_fails_running_jobs(make_worker):
    worker = make_worker(benchmark_step_ms=2.0)
    first_delta = threading.Event()
    worker.publisher.on_publish = lambda events: first_delta.set() if EventKind.DELTA in kinds(events) else None
    done = worker.loop.submit(make_job(max_tokens=5000), 1)
    assert first_delta.wait(WAIT)
    worker.loop.stop()
    assert done.wait(WAIT)
    events = worker.publisher.events("req-1")
    assert events[-1].kind == EventKind.ERROR and "shutting down" in events[-1].error["message"]
    assert [e.seq for e in events] == list(range(len(events)))


def test_job_with_more_choices_than_batch_slots_does_not_block_others(make_worker):
    # The API refuses such an n, but a worker may be configured with a smaller batch than the API expects.
    worker = make_worker(max_batch_size=2, max_choices=2)
    assert worker.loop.submit(make_job("wide", n=3, deadline=time.time() + 3), 1).wait(1.0)
    assert worker.loop.submit(make_job("narrow", max_tokens=3), 1).wait(1.0)
    wide = worker.publisher.events("wide")
    assert kinds(wide)[-1] == EventKind.ERROR and wide[-1].error["param"] == "n"
    assert kinds(worker.publisher.events("narrow"))[-1] == EventKind.DONE


def test_a_worker_refuses_a_vision_model_on_an_engine_without_images(benchmark_spec, chat_tokenizer):
    from inference_worker.main import check_engine_capabilities

    engine = BenchmarkEngine(benchmark_spec, Settings.from_env({}), chat_tokenizer)
    check_engine_capabilities(benchmark_spec, engine)  # no vision: fine
    vision_spec = dataclasses.replace(benchmark_spec, capabilities=frozenset({"chat", "vision"}))
    with pytest.raises(SystemExit, match="does not take images"):
        check_engine_capabilities(vision_spec, engine)


class ThreadRecordingEngine(BenchmarkEngine):
    """Notes which thread builds each prompt."""

    prompt_threads: list[str] = []

    def prompt(self, messages, tools=(), images=()):
        self.prompt_threads.append(threading.current_thread().name)
        return super().prompt(messages, tools, images)


def test_prompts_are_built_in_the_submitting_thread_not_the_loop(make_worker):
    worker = make_worker(ThreadRecordingEngine)
    ThreadRecordingEngine.prompt_threads = []
    kinds_seen = kinds(worker.run(make_job("req-thread")))
    assert kinds_seen[-1] == EventKind.DONE
    assert ThreadRecordingEngine.prompt_threads == [threading.current_thread().name]
