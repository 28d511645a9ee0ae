"""`init_from` at compose time: the model shape and the tokenizer a run inherits from its parent.

`python src/train.py init_from=<HF dir | run dir | .ckpt>` without `model=` composes `model=auto`
(`default_model_auto`, applied to the command line), and `resolve_init_from` then fills every
`model.*` field from the parent before anything reads them, so `${model.max_seq_len}` in the data
configs is the checkpoint's own context length. An explicit `model=` must equal the parent's
shape (`ShapeMismatchError` names both). Unless `tokenizer.path` is given, the parent's tokenizer
is the run's: an HF folder's own files, or a run dir's copy.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

log = logging.getLogger(__name__)

# lmforge.checkpoint.AUTO_MODEL; repeated here because `default_model_auto` runs before the
# command line is composed, when nothing that imports torch may be loaded yet.
AUTO_MODEL = "auto"


class InitFromError(ValueError):
    """`init_from` cannot start this run (missing, unreadable, or another model shape)."""


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def default_model_auto(overrides: Sequence[str]) -> list[str]:
    """`overrides` plus `model=auto` when they set `init_from` to something and choose no model."""
    overrides = list(overrides)
    init_from = [o.split("=", 1)[1] for o in overrides if "=" in o and _key(o) == "init_from"]
    chooses_model = any(_key(o) == "model" for o in overrides if not o.startswith("-"))
    if init_from and init_from[-1].strip() not in ("", "null", "None") and not chooses_model:
        overrides.append(f"model={AUTO_MODEL}")
    return overrides


def resolve_init_from(cfg: DictConfig, overrides: Sequence[str] = ()) -> None:
    """Fill `cfg.model` from `cfg.init_from` under model=auto (else check it matches) and inherit
    the parent's tokenizer unless `tokenizer.path` was given. Raises InitFromError in one line."""
    from lmforge.checkpoint import check_same_shape, parent_model_config, parent_tokenizer_path
    from lmforge.model import ModelConfig

    init_from = cfg.get("init_from")
    if not init_from:
        if cfg.model.name == AUTO_MODEL:
            raise InitFromError("model=auto takes the shape from init_from; set init_from=<HF dir, run dir or .ckpt>")
        return
    try:
        parent = parent_model_config(init_from)
        explicit_tokenizer = any(_key(o) in ("tokenizer", "tokenizer.path") for o in overrides)
        if not explicit_tokenizer:
            inherited = parent_tokenizer_path(init_from)
            if inherited is not None:
                with open_dict(cfg):
                    cfg.tokenizer.path = inherited
        if cfg.model.name != AUTO_MODEL:
            configured = ModelConfig(**OmegaConf.to_container(cfg.model, resolve=True))
            check_same_shape(configured, parent, str(init_from))
            return
    except (ValueError, KeyError, FileNotFoundError) as err:
        raise InitFromError(str(err).strip("'\"")) from err
    if parent.name in ("hf", "custom", AUTO_MODEL):
        parent.name = Path(str(init_from)).resolve().name
    for key, value in parent.to_dict().items():
        cfg.model[key] = value
    log.info("model=auto: %s from init_from=%s", parent.name, init_from)
