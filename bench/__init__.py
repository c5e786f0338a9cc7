"""LlamaGate's benchmarks: the load generator and the scripts that start a stack and measure it.

Run them from the repository root with the project's virtualenv, e.g. `.venv/bin/python -m bench.path`.
"""
