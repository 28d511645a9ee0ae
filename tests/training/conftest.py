"""Fixtures for the training tests: a small tokenizer and token batches from the embedded corpus,
and Hydra composition of conf/train.yaml exactly as `src/train.py` does it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict

from lmforge.config_schema import register_configs
from lmforge.data.default_corpus import ensure_default_corpus, iter_corpus_texts
from lmforge.tokenizer import Tokenizer, train_tokenizer

from training_support import CONF_DIR, MICRO_MODEL, REPO, TRAIN_SCRIPT, compose_train, resolve_job  # noqa: F401


@pytest.fixture(scope="session")
def corpus_dir(tmp_path_factory) -> Path:
    return ensure_default_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory, corpus_dir) -> Path:
    texts = [t[:4000] for t in iter_corpus_texts(corpus_dir)]
    tokenizer = train_tokenizer(texts, vocab_size=512, show_progress=False)
    return tokenizer.save(tmp_path_factory.mktemp("tokenizer"))


@pytest.fixture(scope="session")
def other_tokenizer_dir(tmp_path_factory, corpus_dir) -> Path:
    """Same vocab size, different merges: a different fingerprint."""
    texts = [t[:2000] for t in iter_corpus_texts(corpus_dir, domains=["code"])]
    tokenizer = train_tokenizer(texts, vocab_size=512, show_progress=False)
    return tokenizer.save(tmp_path_factory.mktemp("other_tokenizer"))


@pytest.fixture(scope="session")
def token_rows(tokenizer_dir, corpus_dir) -> torch.Tensor:
    """[N, 33] rows of real corpus tokens (documents EOS-separated), for in-process fits."""
    tokenizer = Tokenizer.load(tokenizer_dir)
    ids: list[int] = []
    for text in iter_corpus_texts(corpus_dir):
        ids += tokenizer.encode(text[:3000]) + [tokenizer.eos_id]
    width = 33
    return torch.tensor(ids[: len(ids) // width * width]).view(-1, width)


@pytest.fixture
def compose_cfg():
    yield compose_train
    GlobalHydra.instance().clear()


@pytest.fixture(scope="session")
def shards_dir(tmp_path_factory, corpus_dir, tokenizer_dir) -> Path:
    """Token shards of the embedded corpus (data_pipeline.shards), seq_len = MICRO_MODEL's max_seq_len."""
    from data_pipeline.shards import ShardConfig, write_shards

    out = tmp_path_factory.mktemp("shards")
    write_shards(ShardConfig(corpus=str(corpus_dir), tokenizer=str(tokenizer_dir), out=str(out), seq_len=64,
                             sequences_per_shard=256))
    return out


@pytest.fixture
def shard_overrides(shards_dir, corpus_dir) -> list[str]:
    """The default data config pointed at the test shards; batch of 8 sequences per device."""
    return [f"data.shards_dir={shards_dir}", f"data.corpus_dir={corpus_dir}", "data.batch_size=8",
            "data.val_sequences_per_domain=16"]
