"""Prepares each model's tokenizer as plain files (tokenizer.json + config) in a local cache.

Weights may be a GGUF file; reading its tokenizer needs transformers and takes seconds. Doing
that once, and loading the cached `tokenizer.json` everywhere else, keeps web processes free of
PyTorch and quick to start.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from pathlib import Path

from shared.registry import WeightsSource

log = logging.getLogger(__name__)

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


def tokenizer_cache_path(source: WeightsSource, cache_dir: Path) -> Path:
    """Where the converted tokenizer of `source` lives; changes when the weights file changes."""
    weights = source.resolve()
    stat = weights.stat()
    digest = hashlib.sha256(f"{source.cache_key}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()
    return Path(cache_dir) / "tokenizers" / digest[:24]


def prepare_tokenizer(source: WeightsSource, cache_dir: Path) -> Path:
    """Return a directory holding `tokenizer.json` for `source`, converting it on first use."""
    if source.format == "hf" and (source.resolve() / "tokenizer.json").exists():
        return source.resolve()
    target = tokenizer_cache_path(source, cache_dir)
    if all((target / name).exists() for name in TOKENIZER_FILES):
        return target
    log.info("converting tokenizer", extra={"source": source.cache_key, "target": str(target)})
    from transformers import AutoTokenizer  # heavy: only imported when a conversion is needed

    weights = source.resolve()
    if source.format == "gguf":
        tokenizer = AutoTokenizer.from_pretrained(str(weights.parent), gguf_file=weights.name)
    else:
        tokenizer = AutoTokenizer.from_pretrained(str(weights))
    target.parent.mkdir(parents=True, exist_ok=True)
    # Write into a temporary directory and rename it, so concurrent processes never see half a cache.
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=".staging-"))
    try:
        tokenizer.save_pretrained(str(staging))
        try:
            os.rename(staging, target)
        except OSError:
            if not target.exists():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
