"""Token shards of twelve-word documents, where every id is easy to follow (the `shards` fixture)."""

from __future__ import annotations

from pathlib import Path

from lmforge.data.shard_writer import ShardConfig

WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()
WORD_SHARD_SEQ = 16


def word_shard_config(corpus: Path, tokenizer_dir: Path, out: Path, **kw) -> ShardConfig:
    kw = {"seq_len": WORD_SHARD_SEQ, "sequences_per_shard": 20, "val_fraction": 0.1, "num_proc": 1, **kw}
    return ShardConfig(corpus=str(corpus), tokenizer=str(tokenizer_dir), out=str(out), **kw)
