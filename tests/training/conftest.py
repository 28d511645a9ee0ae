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

REPO = Path(__file__).resolve().parents[2]
CONF_DIR = REPO / "conf"
TRAIN_SCRIPT = REPO / "src" / "train.py"
# Shapes small enough for a CPU step in milliseconds (vocab matches the test tokenizer).
MICRO_MODEL = ["model.vocab_size=512", "model.d_model=32", "model.n_layers=2", "model.n_heads=2",
               "model.n_kv_heads=1", "model.ffn_dim=64", "model.max_seq_len=64"]


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


def compose_train(overrides: list[str], run_dir: Path | None = None) -> DictConfig:
    """Compose conf/train.yaml like `src/train.py` would, with the Hydra runtime set up so that
    `${hydra:...}` interpolations (run_dir, logger group) resolve."""
    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    if run_dir is not None:
        with open_dict(cfg):
            cfg.hydra.runtime.output_dir = str(run_dir)
    HydraConfig.instance().set_config(cfg)
    return cfg


@pytest.fixture
def compose_cfg():
    yield compose_train
    GlobalHydra.instance().clear()


def resolve_job(cfg: DictConfig) -> dict:
    """The job's config with every interpolation resolved (Hydra's own node left out, as `--cfg job`)."""
    job = cfg.copy()
    with open_dict(job):
        job.pop("hydra", None)
    return OmegaConf.to_container(job, resolve=True)


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
