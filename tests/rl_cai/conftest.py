"""RL/CAI fixtures: a tokenizer trained on generated task text and a very small model shape."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from lmforge.config_schema import register_configs

from lmforge.data.tasks import make_tasks
from lmforge.tokenizer import train_tokenizer


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory) -> str:
    texts = []
    for task in make_tasks("mix", 400, 0, "train"):
        texts += [task.prompt, task.response()]
    return str(train_tokenizer(texts, vocab_size=384, show_progress=False).save(tmp_path_factory.mktemp("tok")))


@pytest.fixture()
def model_cfg() -> dict:
    torch.manual_seed(0)
    return dict(vocab_size=384, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=64, max_seq_len=128, name="t")


CONF_DIR = Path(__file__).resolve().parents[2] / "conf"


@pytest.fixture()
def compose_train():
    """Compose conf/train.yaml as `src/train.py` does, Hydra runtime included (`${hydra:...}` resolves);
    the returned config has no `hydra` node, like the task config `@hydra.main` passes on."""

    def compose_at(overrides: list[str], run_dir: Path) -> DictConfig:
        register_configs()
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose("train", overrides=overrides, return_hydra_config=True)
        with open_dict(cfg):
            cfg.hydra.runtime.output_dir = str(run_dir)
        HydraConfig.instance().set_config(cfg)
        with open_dict(cfg):
            cfg.pop("hydra")
        return cfg

    yield compose_at
    GlobalHydra.instance().clear()
