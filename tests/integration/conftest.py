"""Integration fixtures: code that must run under gevent runs in a monkey-patched subprocess,
exactly as it does inside a gunicorn gevent worker."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PREAMBLE = "from gevent import monkey\nmonkey.patch_all()\nimport json, sys, time\n"


@pytest.fixture
def run_under_gevent(tmp_path):
    """Run a Python snippet in a gevent-patched process; returns the JSON it prints last."""

    def run(code: str, timeout: float = 60, **variables) -> dict:
        script = tmp_path / "scenario.py"
        assignments = "".join(f"{name} = {value!r}\n" for name, value in variables.items())
        script.write_text(PREAMBLE + assignments + textwrap.dedent(code))
        done = subprocess.run([sys.executable, str(script)], cwd=ROOT, capture_output=True, text=True,
                              timeout=timeout)
        assert done.returncode == 0, f"scenario failed:\n{done.stdout}\n{done.stderr}"
        return json.loads(done.stdout.strip().splitlines()[-1])

    return run
