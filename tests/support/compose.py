"""Composing conf/train.yaml in tests exactly as `src/train.py` does, and the shapes and paths the
training tests share."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict

from lmforge.config_paths import conf_dir
from lmforge.config_schema import register_configs

REPO = Path(__file__).resolve().parents[2]
CONF_DIR = conf_dir()  # the repo-root conf/, found through the lmforge package
TRAIN_SCRIPT = REPO / "src" / "train.py"
# Shapes small enough for a CPU step in milliseconds (vocab matches the test tokenizer).
MICRO_MODEL = [
    "model.vocab_size=512",
    "model.d_model=32",
    "model.n_layers=2",
    "model.n_heads=2",
    "model.n_kv_heads=1",
    "model.ffn_dim=64",
    "model.max_seq_len=64",
]


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


def compose_job(overrides: list[str], run_dir: Path) -> DictConfig:
    """`compose_train` without Hydra's own node, like the task config `@hydra.main` passes on."""
    cfg = compose_train(overrides, run_dir)
    with open_dict(cfg):
        cfg.pop("hydra")
    return cfg


def resolve_job(cfg: DictConfig) -> dict:
    """The job's config with every interpolation resolved (Hydra's own node left out, as `--cfg job`)."""
    job = cfg.copy()
    with open_dict(job):
        job.pop("hydra", None)
    return OmegaConf.to_container(job, resolve=True)
