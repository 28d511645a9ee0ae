"""Token shards: `<dir>/<domain>/{train,val}-NNNNN.tar` (webdataset) whose samples hold
SAMPLE_KEY = seq_len little-endian token ids, and `<dir>/manifest.json` (version SHARDS_FORMAT,
dtype, seq_len, tokenizer fingerprint, every shard with its sequence count). Written by
`lmforge.data.shard_writer` (the `python -m data_pipeline.shards` CLI); read by the pretraining
DataModule and the export's perplexity check.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from lmforge.formats import read_versioned_json, write_versioned_json

SHARDS_FORMAT = "lmforge-shards/1"
# Manifests written before the tag existed have no "version"; their layout is version 1's.
LEGACY_SHARDS_FORMATS = (None,)
MANIFEST = "manifest.json"
SAMPLE_KEY = "tokens.bin"
SPLITS = ("train", "val")


def write_manifest(shards_dir: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """Last, atomically: a manifest's presence means the shards are whole. Returns what was written."""
    return write_versioned_json(Path(shards_dir) / MANIFEST, "version", SHARDS_FORMAT, manifest, end="")


def read_manifest(shards_dir: str | Path) -> dict[str, Any]:
    path = Path(shards_dir) / MANIFEST
    if not path.exists():
        raise FileNotFoundError(
            f"no token shards at {shards_dir} (missing {path}); write them with `python -m data_pipeline.shards`"
        )
    return read_versioned_json(path, "version", SHARDS_FORMAT, LEGACY_SHARDS_FORMATS)


def sample(key: str, tokens: np.ndarray, dtype: np.dtype) -> dict[str, Any]:
    """One webdataset sample: a sequence of token ids."""
    return {"__key__": key, SAMPLE_KEY: tokens.astype(dtype).tobytes()}


def open_shard(url: str):
    """The samples of one tar, in write order."""
    import webdataset as wds  # heavy (imports torch): only readers pay for it

    # Work is split by global batch index by the caller, so webdataset must not also split
    # shards across workers or nodes (its defaults would hide samples from some workers).
    return wds.WebDataset(url, shardshuffle=False, empty_check=False, nodesplitter=None, workersplitter=None)


def read_shard(path: Path, dtype: np.dtype, expected: int | None = None) -> np.ndarray:
    """All sequences of one shard, [n, seq_len], in the order they were written."""
    rows = [np.frombuffer(s[SAMPLE_KEY], dtype=dtype) for s in open_shard(str(path))]
    if expected is not None and len(rows) != expected:
        raise ValueError(
            f"shard {path} holds {len(rows)} sequences but its manifest says {expected}; rewrite the shards"
        )
    return np.stack(rows)
