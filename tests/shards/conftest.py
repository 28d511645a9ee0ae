"""Fixtures of the shard tests: a two-domain corpus with a corrupt line, a tokenizer, its shards."""

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from data_pipeline.shards import ShardConfig, write_shards
from lmforge.tokenizer import train_tokenizer

WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()
SEQ = 16  # sequence length of the `shards` fixture


def _doc(rng: np.random.Generator, n: int) -> str:
    return " ".join(rng.choice(WORDS, size=n)) + "."


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("corpus")
    rng = np.random.default_rng(0)
    for domain, count in (("prose", 120), ("code", 60)):
        (root / domain).mkdir()
        with gzip.open(root / domain / "part-00000.jsonl.gz", "wt") as f:
            for i in range(count):
                record = {"id": f"{domain}-{i}", "text": _doc(rng, int(rng.integers(5, 80))), "domain": domain}
                f.write(json.dumps(record) + "\n")
            f.write("{not json\n")  # a corrupt record: counted, not fatal
    return root


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tok")
    train_tokenizer([" ".join(WORDS)] * 50, vocab_size=384, show_progress=False).save(out)
    return out


def make_shard_config(corpus: Path, tokenizer_dir: Path, out: Path, **kw) -> ShardConfig:
    kw = {"seq_len": SEQ, "sequences_per_shard": 20, "val_fraction": 0.1, "num_proc": 1, **kw}
    return ShardConfig(corpus=str(corpus), tokenizer=str(tokenizer_dir), out=str(out), **kw)


@pytest.fixture(scope="session")
def shards(tmp_path_factory, corpus, tokenizer_dir) -> Path:
    out = tmp_path_factory.mktemp("shards")
    write_shards(make_shard_config(corpus, tokenizer_dir, out))
    return out


@pytest.fixture
def shard_config():
    """`make_shard_config(corpus, tokenizer_dir, out, **overrides)`: the test shards' settings."""
    return make_shard_config
