"""Typed schemas for the Hydra config tree, registered in Hydra's ConfigStore.

`conf/train.yaml` puts `schema/model` under `model` and `schema/optim` under `optim` before the
chosen group options merge on top, so `model.n_layerz=3` (unknown key) or `model.n_layers=abc`
(wrong type) fail at compose time instead of being dropped or crashing mid-run. The schemas are
the dataclasses the code itself uses (`ModelConfig`, `OptimConfig`): one source of truth.
"""

from __future__ import annotations

from hydra.core.config_store import ConfigStore

from lmforge.model import ModelConfig
from lmforge.stages.base import OptimConfig

SCHEMAS: dict[str, type] = {"model": ModelConfig, "optim": OptimConfig}


def register_configs() -> None:
    """Idempotent; call before Hydra composes (`src/train.py` and the config tests do)."""
    store = ConfigStore.instance()
    for name, node in SCHEMAS.items():
        store.store(group="schema", name=name, node=node)
