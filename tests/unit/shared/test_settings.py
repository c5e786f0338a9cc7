"""Settings: one typed object read from the environment, with laptop defaults and loud validation."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from shared.settings import DEFAULT_MODELS_FILE, Settings


def test_defaults_run_on_a_laptop():
    settings = Settings.from_env({})
    assert settings.broker_url == "amqp://guest:guest@127.0.0.1:5672/"
    assert settings.redis_url == "redis://127.0.0.1:6379/0"
    assert settings.models_file == DEFAULT_MODELS_FILE and settings.models_file.exists()
    assert settings.worker_models == ("smollm2-135m-instruct",)
    assert (settings.host, settings.port) == ("127.0.0.1", 8000)
    assert settings.log_format == "json"


def test_settings_are_immutable():
    with pytest.raises(dataclasses.FrozenInstanceError):
        Settings.from_env({}).port = 1  # type: ignore[misc]


@pytest.mark.parametrize("variable, raw, field, value", [
    ("LLAMAGATE_MAX_BATCH_SIZE", "32", "max_batch_size", 32),
    ("LLAMAGATE_DEFAULT_MAX_TOKENS", " 256 ", "default_max_tokens", 256),
    ("LLAMAGATE_QUEUE_TIMEOUT", "12.5", "queue_timeout", 12.5),
    ("LLAMAGATE_BENCHMARK_STEP_MS", "3", "benchmark_step_ms", 3.0),
    ("LLAMAGATE_MODELS_FILE", "/etc/llamagate/models.toml", "models_file", Path("/etc/llamagate/models.toml")),
    ("LLAMAGATE_CACHE_DIR", "~/llg-cache", "cache_dir", Path.home() / "llg-cache"),
    ("LLAMAGATE_WORKER_MODELS", "a, b ,,c,", "worker_models", ("a", "b", "c")),
    ("LLAMAGATE_WORKER_MODELS", "solo", "worker_models", ("solo",)),
    ("LLAMAGATE_LOG_LEVEL", "debug", "log_level", "debug"),
    ("LLAMAGATE_REDIS_URL", "redis://cache:6380/2", "redis_url", "redis://cache:6380/2"),
])
def test_variable_is_parsed_with_the_fields_type(variable, raw, field, value):
    parsed = getattr(Settings.from_env({variable: raw}), field)
    assert parsed == value
    assert type(parsed) is type(value)


def test_empty_variable_means_default():
    assert Settings.from_env({"LLAMAGATE_MAX_BATCH_SIZE": "", "PORT": ""}) == Settings.from_env({})


@pytest.mark.parametrize("environ, port", [
    ({"PORT": "5000"}, 5000),
    ({"LLAMAGATE_PORT": "6000"}, 6000),
    ({"PORT": "5000", "LLAMAGATE_PORT": "6000"}, 5000),  # the platform's PORT comes first
    ({"PORT": "", "LLAMAGATE_PORT": "6000"}, 6000),
])
def test_aliases_are_read_in_order(environ, port):
    assert Settings.from_env(environ).port == port


@pytest.mark.parametrize("environ, url", [
    ({"CLOUDAMQP_URL": "amqp://cloud/"}, "amqp://cloud/"),
    ({"RABBITMQ_URL": "amqp://rabbit/"}, "amqp://rabbit/"),
    ({"CLOUDAMQP_URL": "amqp://cloud/", "RABBITMQ_URL": "amqp://rabbit/"}, "amqp://cloud/"),
    ({"LLAMAGATE_BROKER_URL": "amqp://own/", "CLOUDAMQP_URL": "amqp://cloud/"}, "amqp://own/"),
])
def test_broker_url_aliases(environ, url):
    assert Settings.from_env(environ).broker_url == url


def test_overrides_win_over_the_environment():
    settings = Settings.from_env({"LLAMAGATE_MAX_BATCH_SIZE": "32"}, max_batch_size=4, host="0.0.0.0")
    assert (settings.max_batch_size, settings.host) == (4, "0.0.0.0")


def test_process_environment_is_the_default_source(monkeypatch):
    monkeypatch.setenv("LLAMAGATE_MAX_CHOICES", "3")
    assert Settings.from_env().max_choices == 3


def test_given_environ_replaces_the_process_environment(monkeypatch):
    monkeypatch.setenv("LLAMAGATE_MAX_CHOICES", "3")
    assert Settings.from_env({}).max_choices == Settings().max_choices


@pytest.mark.parametrize("variable, raw", [
    ("LLAMAGATE_MAX_BATCH_SIZE", "sixteen"),
    ("LLAMAGATE_MAX_BATCH_SIZE", "1.5"),
    ("PORT", "80a"),
    ("LLAMAGATE_QUEUE_TIMEOUT", "soon"),
])
def test_unparsable_variable_is_named_in_the_error(variable, raw):
    with pytest.raises(ValueError, match=f"{variable}={raw!r}"):
        Settings.from_env({variable: raw})


@pytest.mark.parametrize("name", ["default_max_tokens", "max_batch_size", "enqueue_timeout",
                                  "queue_timeout", "generation_timeout", "heartbeat_interval",
                                  "stall_timeout", "keepalive_interval", "max_body_bytes"])
@pytest.mark.parametrize("value", [0, -1])
def test_non_positive_limit_is_refused(name, value):
    with pytest.raises(ValueError, match=name):
        Settings.from_env({}, **{name: value})


def test_heartbeat_ttl_must_outlast_the_interval():
    with pytest.raises(ValueError, match="HEARTBEAT_TTL"):
        Settings.from_env({"LLAMAGATE_HEARTBEAT_INTERVAL": "5", "LLAMAGATE_HEARTBEAT_TTL": "5"})
    assert Settings.from_env({"LLAMAGATE_HEARTBEAT_INTERVAL": "5", "LLAMAGATE_HEARTBEAT_TTL": "6"}).heartbeat_ttl == 6


def test_job_lifetime_stays_under_rabbitmqs_consumer_timeout():
    with pytest.raises(ValueError, match="29 minutes"):
        Settings.from_env({"LLAMAGATE_GENERATION_TIMEOUT": "1700", "LLAMAGATE_QUEUE_TIMEOUT": "60"})
    assert Settings.from_env({"LLAMAGATE_GENERATION_TIMEOUT": "1600", "LLAMAGATE_QUEUE_TIMEOUT": "60"}
                             ).generation_timeout == 1600


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_known_log_format_is_accepted(log_format):
    assert Settings.from_env({"LLAMAGATE_LOG_FORMAT": log_format}).log_format == log_format


@pytest.mark.parametrize("log_format", ["xml", "JSON"])
def test_unknown_log_format_is_refused(log_format):
    with pytest.raises(ValueError, match="LOG_FORMAT"):
        Settings.from_env({"LLAMAGATE_LOG_FORMAT": log_format})


@pytest.mark.parametrize("name, value", [("torch_threads", 0), ("worker_metrics_port", 0),
                                         ("benchmark_step_ms", 0.0), ("worker_wait_timeout", 0.0)])
def test_zero_means_off_where_documented(name, value):
    assert getattr(Settings.from_env({}, **{name: value}), name) == value


def test_max_choices_defaults_to_what_one_batch_holds():
    assert Settings.from_env({}).max_choices == 8
    assert Settings.from_env({"LLAMAGATE_MAX_BATCH_SIZE": "4"}).max_choices == 4


def test_max_choices_beyond_the_batch_is_refused():
    with pytest.raises(ValueError, match="LLAMAGATE_MAX_CHOICES"):
        Settings.from_env({"LLAMAGATE_MAX_BATCH_SIZE": "4", "LLAMAGATE_MAX_CHOICES": "6"})
    with pytest.raises(ValueError, match="max_choices"):
        Settings.from_env({"LLAMAGATE_MAX_CHOICES": "-1"})


# --- images ------------------------------------------------------------------------------------

@pytest.mark.parametrize("raw, value", [("1", True), ("true", True), ("On", True), ("yes", True),
                                        ("0", False), ("false", False), (" OFF ", False), ("no", False)])
def test_image_fetching_can_be_turned_off(raw, value):
    assert Settings.from_env({"LLAMAGATE_IMAGE_FETCH": raw}).image_fetch_enabled is value


def test_image_fetching_is_on_by_default_for_public_addresses_only():
    settings = Settings.from_env({})
    assert settings.image_fetch_enabled is True
    assert settings.image_fetch_allowed_networks == () and settings.image_fetch_allowed_hosts == ()
    assert settings.image_fetch_timeout > 0 and settings.image_fetch_max_redirects >= 0


def test_an_unreadable_switch_is_named():
    with pytest.raises(ValueError, match="LLAMAGATE_IMAGE_FETCH='maybe'"):
        Settings.from_env({"LLAMAGATE_IMAGE_FETCH": "maybe"})


def test_allowed_networks_are_lists_of_cidrs():
    settings = Settings.from_env({"LLAMAGATE_IMAGE_FETCH_ALLOWED_NETWORKS": "127.0.0.1/32, 10.0.0.0/8,fd00::/8"})
    assert settings.image_fetch_allowed_networks == ("127.0.0.1/32", "10.0.0.0/8", "fd00::/8")
    with pytest.raises(ValueError, match="not a network"):
        Settings.from_env({"LLAMAGATE_IMAGE_FETCH_ALLOWED_NETWORKS": "intranet"})


@pytest.mark.parametrize("name", ["image_max_bytes", "image_max_pixels", "max_images_per_request",
                                  "image_fetch_timeout"])
def test_image_caps_must_be_positive(name):
    with pytest.raises(ValueError, match=name):
        Settings.from_env({}, **{name: 0})
