"""Typed schemas for the Hydra config tree, registered in Hydra's ConfigStore.

`conf/train.yaml` puts `schema/model` under `model` and `schema/optim` under `optim` before the
chosen group options merge on top, so `model.n_layerz=3` (unknown key) or `model.n_layers=abc`
(wrong type) fail at compose time instead of being dropped or crashing mid-run. The schemas are
the dataclasses the code itself uses (`ModelConfig`, `OptimConfig`): one source of truth.
"""

from __future__ import annotations

from dataclasses import fields

from hydra.core.config_store import ConfigStore

from lmforge.model import ModelConfig
from lmforge.stages.base import OptimConfig

SCHEMAS: dict[str, type] = {"model": ModelConfig, "optim": OptimConfig}


def register_configs() -> None:
    """Idempotent; call before Hydra composes (`src/train.py` and the config tests do)."""
    store = ConfigStore.instance()
    for name, node in SCHEMAS.items():
        store.store(group="schema", name=name, node=node)


class UnknownConfigKeyError(ValueError):
    """A key was forced into a typed node (`+model.typo=3`) that its schema does not have."""


def validate_config(cfg) -> None:
    """`+group.key=v` bypasses the schema at compose time; catch such keys before they are dropped."""
    for name, schema in SCHEMAS.items():
        node = cfg.get(name)
        if node is None:
            continue
        unknown = sorted(set(node.keys()) - {f.name for f in fields(schema)})
        if unknown:
            raise UnknownConfigKeyError(
                f"unknown key(s) {[f'{name}.{k}' for k in unknown]}; {schema.__name__} has "
                f"{sorted(f.name for f in fields(schema))}"
            )
