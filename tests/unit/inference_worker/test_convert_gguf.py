"""The GGUF -> HF conversion's config fix-up for loaders that predate transformers 5."""

from __future__ import annotations

import json

from inference_worker.convert_gguf import _write_legacy_rope_keys


def test_rope_base_is_written_where_older_loaders_read_it(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"rope_parameters": {"rope_theta": 100000.0, "rope_type": "default"}}))
    _write_legacy_rope_keys(path)
    config = json.loads(path.read_text())
    assert config["rope_theta"] == 100000.0 and "rope_scaling" not in config


def test_non_default_rope_scaling_is_copied_too(tmp_path):
    path = tmp_path / "config.json"
    rope = {"rope_theta": 500000.0, "rope_type": "llama3", "factor": 8.0}
    path.write_text(json.dumps({"rope_parameters": rope}))
    _write_legacy_rope_keys(path)
    config = json.loads(path.read_text())
    assert config["rope_theta"] == 500000.0
    assert config["rope_scaling"] == {"rope_type": "llama3", "factor": 8.0}
