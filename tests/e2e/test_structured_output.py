"""Structured output through the official `openai` SDK with the real model: JSON mode, JSON Schema
with `strict`, the SDK's `parse()` with a Pydantic model, and what cannot be enforced."""

from __future__ import annotations

import json

import jsonschema
import openai
import pytest
from pydantic import BaseModel, Field

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def model_id(engine_model_id) -> str:
    """Constrained decoding is tested on both CPU engines."""
    return engine_model_id

CITY_SCHEMA = {"type": "object", "properties": {
    "city": {"type": "string", "maxLength": 16},
    "country": {"type": "string", "maxLength": 16},
    "population_millions": {"type": "integer", "minimum": 0, "maximum": 40}},
    "required": ["city", "country", "population_millions"], "additionalProperties": False}
ASK_CITY = [{"role": "user", "content": "Describe Paris as JSON."}]


class Pet(BaseModel):
    name: str = Field(max_length=12)
    species: str = Field(max_length=12)
    age: int = Field(ge=0, le=30)


def json_schema_format(schema: dict, strict: bool = True) -> dict:
    return {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema, "strict": strict}}


def test_json_object_mode_gives_a_json_object(client, model_id):
    completion = client.chat.completions.create(
        model=model_id, messages=[{"role": "user", "content": "Give me a JSON object with a key 'ok'."}],
        response_format={"type": "json_object"}, max_tokens=60, temperature=0)
    choice = completion.choices[0]
    if choice.finish_reason == "stop":
        assert isinstance(json.loads(choice.message.content), dict)
    else:  # cut by max_tokens: still the start of an object
        assert choice.finish_reason == "length" and choice.message.content.lstrip().startswith("{")


@pytest.mark.parametrize("stream", [False, True])
def test_strict_json_schema_output_validates(client, model_id, stream):
    request = dict(model=model_id, messages=ASK_CITY, response_format=json_schema_format(CITY_SCHEMA),
                   max_tokens=120, temperature=0.7, seed=3)
    if stream:
        chunks = list(client.chat.completions.create(stream=True, **request))
        content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    else:
        choice = client.chat.completions.create(**request).choices[0]
        content, finish = choice.message.content, [choice.finish_reason]
    assert finish == ["stop"]
    jsonschema.validate(json.loads(content), CITY_SCHEMA)


def test_sdk_parse_with_a_pydantic_model(client, model_id):
    completion = client.chat.completions.parse(
        model=model_id, messages=[{"role": "user", "content": "Invent a pet."}], response_format=Pet,
        max_tokens=100, temperature=0.7, seed=5)
    pet = completion.choices[0].message.parsed
    assert isinstance(pet, Pet)
    assert 0 <= pet.age <= 30 and len(pet.name) <= 12


def test_max_tokens_inside_json_ends_with_length(client, model_id):
    completion = client.chat.completions.create(model=model_id, messages=ASK_CITY, max_tokens=4,
                                                response_format=json_schema_format(CITY_SCHEMA))
    choice = completion.choices[0]
    assert choice.finish_reason == "length"
    assert choice.message.content.lstrip().startswith("{")
    with pytest.raises(ValueError):
        json.loads(choice.message.content)


def test_strict_schema_with_an_unsupported_keyword_is_a_400_naming_it(client, model_id):
    schema = {"type": "object", "properties": {"tags": {"type": "array", "uniqueItems": True}}}
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=model_id, messages=ASK_CITY, response_format=json_schema_format(schema))
    assert "uniqueItems" in caught.value.body["message"]
    assert caught.value.body["param"] == "response_format.json_schema.schema"


def test_non_strict_schema_is_best_effort(client, model_id):
    schema = {"type": "object", "properties": {"tags": {"type": "array", "maxItems": 2, "uniqueItems": True,
                                                        "items": {"type": "integer", "minimum": 0, "maximum": 9}}},
              "required": ["tags"], "additionalProperties": False}
    completion = client.chat.completions.create(model=model_id, messages=ASK_CITY, max_tokens=40, temperature=0,
                                                response_format=json_schema_format(schema, strict=False))
    assert completion.choices[0].finish_reason == "stop"
    tags = json.loads(completion.choices[0].message.content)["tags"]
    assert len(tags) <= 2 and all(0 <= t <= 9 for t in tags)


def test_model_without_json_capability_is_a_400(client):
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="llamagate-benchmark", messages=ASK_CITY,
                                       response_format={"type": "json_object"})
    assert caught.value.body["param"] == "response_format"
