"""LoRA through `peft`: wrap a `Transformer`, save the adapter on its own, merge for export.

Our module names equal HF Llama's (`q_proj`, ..., `down_proj`), so a `peft` config written for
an HF Llama targets the same layers here, and an adapter saved by `save_adapter` uses the
layer names HF tools expect (with our top-level names, i.e. without HF's `model.` prefix).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from peft import LoraConfig, PeftModel, get_peft_model
from torch import nn

from lmforge.model import Transformer

log = logging.getLogger(__name__)

ALL_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass
class LoraSettings:
    """`conf/peft/lora.yaml`. alpha / rank scales the update (Hu et al. 2021)."""

    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    target_modules: list[str] = field(default_factory=lambda: list(ALL_LINEAR))
    name: str = "lora"  # the config-group choice, kept for the manifest

    @classmethod
    def from_dict(cls, cfg: dict[str, Any] | LoraSettings) -> LoraSettings:
        if isinstance(cfg, LoraSettings):
            return cfg
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(cfg) - known)
        if unknown:
            raise ValueError(f"unknown peft config keys {unknown}; LoRA settings are {sorted(known)}")
        settings = cls(**cfg)
        if settings.rank <= 0:
            raise ValueError(f"peft.rank={settings.rank} must be positive")
        return settings

    def to_peft(self) -> LoraConfig:
        return LoraConfig(
            r=self.rank,
            lora_alpha=self.alpha,
            lora_dropout=self.dropout,
            target_modules=list(self.target_modules),
            bias="none",
        )


def apply_lora(model: Transformer, peft_cfg: dict[str, Any] | LoraSettings) -> PeftModel:
    """Wrap `model` in a `PeftModel`; only the adapter weights stay trainable.

    The wrapper forwards `model(input_ids, position_ids=..., attn_mask=..., return_hidden=...)`
    unchanged, and `model.disable_adapter()` gives the base model back (DPO's reference).
    """
    settings = LoraSettings.from_dict(peft_cfg)
    present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    missing = [t for t in settings.target_modules if t not in present]
    if missing:
        raise ValueError(f"peft.target_modules {missing} name no module of the model (have e.g. {ALL_LINEAR})")
    wrapped = get_peft_model(model, settings.to_peft())
    trainable = sum(p.numel() for p in wrapped.parameters() if p.requires_grad)
    total = sum(p.numel() for p in wrapped.parameters())
    log.info(
        "LoRA rank %d on %s: %d trainable of %d parameters", settings.rank, settings.target_modules, trainable, total
    )
    return wrapped


def is_lora(model: nn.Module) -> bool:
    return isinstance(model, PeftModel)


def merge_lora(model: nn.Module) -> Transformer:
    """Fold the adapter into the base weights and return a plain `Transformer` (for export)."""
    if not isinstance(model, PeftModel):
        return model  # already plain
    return model.merge_and_unload()


def save_adapter(model: PeftModel, directory: str | Path) -> Path:
    """Adapter weights + `adapter_config.json` only (peft's `save_pretrained` layout)."""
    directory = Path(directory)
    model.save_pretrained(str(directory))
    return directory


def load_adapter(base: Transformer, directory: str | Path, trainable: bool = False) -> PeftModel:
    """Attach an adapter saved by `save_adapter` to a base model."""
    return PeftModel.from_pretrained(base, str(directory), is_trainable=trainable)
