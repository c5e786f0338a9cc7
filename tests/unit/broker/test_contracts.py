"""The wire contract: jobs (API -> worker) and job events (worker -> API) survive the trip unchanged."""

from __future__ import annotations

import dataclasses

import orjson
import pytest

from broker.contracts import (CONTRACT_VERSION, ContractError, EventKind, GenerationJob, JobEvent, JobImage,
                              SamplingParams, decode_event_batch, encode_event_batch)


def make_job(**fields) -> GenerationJob:
    defaults = dict(
        request_id="req-1", model="smollm2-135m-instruct",
        messages=({"role": "system", "content": "Be terse."},
                  {"role": "user", "content": [{"type": "text", "text": "Hi 👋"}]}),
        sampling=SamplingParams(temperature=0.7, top_p=0.9, max_tokens=32, stop=("\n\n", "END"), seed=7,
                                presence_penalty=0.5, frequency_penalty=-0.25),
        reply_to="llg:events:web-1", n=2, enqueued_at=1700000000.5, start_by=1700000060.5,
        deadline=1700000660.5)
    return GenerationJob(**{**defaults, **fields})


def over_the_wire(payload: dict) -> dict:
    """What the worker gets: the payload as JSON (dramatiq serializes message arguments so)."""
    return orjson.loads(orjson.dumps(payload))


# --- jobs ---------------------------------------------------------------------------------------

def test_job_round_trips_through_json():
    job = make_job()
    assert GenerationJob.from_payload(over_the_wire(job.to_payload())) == job


def test_job_with_defaults_round_trips():
    job = GenerationJob(request_id="r", model="m", messages=({"role": "user", "content": "x"},),
                        sampling=SamplingParams(), reply_to="c")
    restored = GenerationJob.from_payload(over_the_wire(job.to_payload()))
    assert restored == job
    assert restored.sampling.stop == ()


def test_payload_carries_the_contract_version_and_plain_json_types():
    payload = make_job().to_payload()
    assert payload["version"] == CONTRACT_VERSION
    assert payload["sampling"]["stop"] == ["\n\n", "END"]
    assert isinstance(payload["messages"], list)


def test_restored_job_uses_tuples_so_it_stays_hashable_and_frozen():
    restored = GenerationJob.from_payload(over_the_wire(make_job().to_payload()))
    assert isinstance(restored.messages, tuple)
    assert isinstance(restored.sampling.stop, tuple)
    with pytest.raises(dataclasses.FrozenInstanceError):
        restored.model = "other"  # type: ignore[misc]


def test_to_payload_leaves_the_job_unchanged():
    job = make_job()
    payload = job.to_payload()
    payload["sampling"]["stop"].append("X")
    payload["messages"].append({"role": "user", "content": "injected"})
    assert job.sampling.stop == ("\n\n", "END")
    assert len(job.messages) == 2


def test_job_with_images_round_trips():
    job = make_job(messages=({"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Which?"},
                                                          {"type": "image"}]},),
                   images=(JobImage("image/png", 32, 24, "low", data="iVBORw0KGgo="),
                           JobImage("image/jpeg", 4000, 3000, key="llg:job:req-1:image:1")))
    restored = GenerationJob.from_payload(over_the_wire(job.to_payload()))
    assert restored == job
    assert isinstance(restored.images, tuple) and isinstance(restored.images[0], JobImage)


def test_a_job_of_the_version_before_images_is_refused():
    # A version-2 worker would drop the images and answer about a picture it never saw.
    assert CONTRACT_VERSION == 3
    payload = over_the_wire(make_job().to_payload())
    payload["version"] = 2
    with pytest.raises(ContractError, match="version"):
        GenerationJob.from_payload(payload)


@pytest.mark.parametrize("version", [CONTRACT_VERSION + 1, 0, None, "1"])
def test_job_of_another_contract_version_is_refused(version):
    payload = over_the_wire(make_job().to_payload())
    payload["version"] = version
    with pytest.raises(ContractError, match="version"):
        GenerationJob.from_payload(payload)


def test_job_without_version_is_refused():
    payload = over_the_wire(make_job().to_payload())
    del payload["version"]
    with pytest.raises(ContractError):
        GenerationJob.from_payload(payload)


@pytest.mark.parametrize("mutate", [
    lambda p: p.pop("request_id"),
    lambda p: p.pop("sampling"),
    lambda p: p.pop("messages"),
    lambda p: p.update(unexpected="field"),
    lambda p: p["sampling"].update(min_p=0.1),
    lambda p: p.update(sampling=None),
    lambda p: p.update(messages=None),
    lambda p: p.update(images=[{"media_type": "image/png", "width": 1, "height": 1}]),  # no data, no key
    lambda p: p.update(images=[{"media_type": "image/png", "width": 1, "height": 1, "data": "AA==", "key": "k"}]),
    lambda p: p.update(images=[{"media_type": "image/png", "width": 1, "height": 1, "url": "http://x/"}]),
    lambda p: p.update(images=["AA=="]),
])
def test_malformed_job_is_a_contract_error(mutate):
    payload = over_the_wire(make_job().to_payload())
    mutate(payload)
    with pytest.raises(ContractError):
        GenerationJob.from_payload(payload)


def test_job_payload_that_is_not_an_object_is_a_contract_error():
    with pytest.raises(ContractError):
        GenerationJob.from_payload(["not", "a", "job"])  # type: ignore[arg-type]


@pytest.mark.parametrize("temperature, greedy", [(0.0, True), (0, True), (0.01, False), (1.0, False)])
def test_sampling_is_greedy_only_at_temperature_zero(temperature, greedy):
    assert SamplingParams(temperature=temperature).greedy is greedy


# --- events -------------------------------------------------------------------------------------

EVENTS = [
    JobEvent("req-1", EventKind.STARTED, 0, attempt=2, worker_id="host-1-abc"),
    JobEvent("req-1", EventKind.DELTA, 1, attempt=2, index=1, text="Hello, wörld 👋", tokens=3),
    JobEvent("req-1", EventKind.FINISH, 2, attempt=2, index=1, finish_reason="length"),
    JobEvent("req-1", EventKind.DONE, 3, attempt=2,
             usage={"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}),
    JobEvent("req-2", EventKind.ERROR, 0, error={"message": "too long", "type": "invalid_request_error",
                                                 "param": "messages", "code": "context_length_exceeded"},
             status=400),
]


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: e.kind)
def test_event_round_trips_through_the_wire_form(event):
    assert JobEvent.from_wire(orjson.loads(orjson.dumps(event.to_wire()))) == event


def test_wire_form_omits_default_fields():
    assert JobEvent("r", EventKind.DELTA, 4, text="x").to_wire() == {"r": "r", "k": "delta", "s": 4, "a": 1,
                                                                      "t": "x"}


def test_wire_form_without_attempt_means_first_attempt():
    assert JobEvent.from_wire({"r": "r", "k": "started", "s": 0}).attempt == 1


def test_event_batch_round_trips():
    assert decode_event_batch(encode_event_batch(EVENTS)) == EVENTS


def test_empty_event_batch_round_trips():
    assert decode_event_batch(encode_event_batch([])) == []


def test_event_batch_carries_the_contract_version():
    assert orjson.loads(encode_event_batch(EVENTS[:1]))["v"] == CONTRACT_VERSION


@pytest.mark.parametrize("data", [
    b"",
    b"not json",
    b"{\"v\": 1, \"events\": [",
    orjson.dumps({"v": CONTRACT_VERSION + 1, "events": []}),
    orjson.dumps({"events": []}),
    orjson.dumps([{"v": CONTRACT_VERSION}]),
    orjson.dumps("v"),
    orjson.dumps({"v": CONTRACT_VERSION}),
    orjson.dumps({"v": CONTRACT_VERSION, "events": None}),
    orjson.dumps({"v": CONTRACT_VERSION, "events": [{"k": "delta", "s": 0}]}),
    orjson.dumps({"v": CONTRACT_VERSION, "events": [{"r": "x", "s": 0}]}),
    orjson.dumps({"v": CONTRACT_VERSION, "events": [{"r": "x", "k": "delta"}]}),
    orjson.dumps({"v": CONTRACT_VERSION, "events": ["an event"]}),
    orjson.dumps({"v": CONTRACT_VERSION, "events": [[1, 2]]}),
])
def test_undecodable_event_batch_is_a_contract_error(data):
    with pytest.raises(ContractError):
        decode_event_batch(data)


def test_job_with_tools_and_a_grammar_round_trips():
    tools = ({"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}},)
    job = make_job(tools=tools, grammar='{"grammars": []}', grammar_after="</think>")
    restored = GenerationJob.from_payload(over_the_wire(job.to_payload()))
    assert restored == job
    assert restored.tools == tools and restored.grammar_after == "</think>"
