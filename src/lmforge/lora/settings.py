"""`conf/peft/*.yaml` as a dataclass: LoRA rank and targets, DoRA, and QLoRA's frozen-base quantization."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from peft import LoraConfig

ALL_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
# QLoRA base quantizations that train on CPU and GPU alike (torchao); see lmforge.lora.quantize.
BASE_QUANTIZATIONS = ("int8",)


@dataclass
class LoraSettings:
    """alpha / rank scales the update (Hu et al. 2021); `use_dora` splits each weight into
    magnitude and direction (Liu et al. 2024); `quantize_base` freezes the base in int8 (QLoRA,
    Dettmers et al. 2023, with torchao's weight-only int8 in place of NF4)."""

    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    target_modules: list[str] = field(default_factory=lambda: list(ALL_LINEAR))
    use_dora: bool = False
    quantize_base: str | None = None  # null | int8
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
        if settings.quantize_base not in (None, *BASE_QUANTIZATIONS):
            raise ValueError(
                f"peft.quantize_base={settings.quantize_base!r}; choose null or one of {BASE_QUANTIZATIONS}"
            )
        return settings

    def to_peft(self, task_type: str | None = None) -> LoraConfig:
        """No task type while training: peft's CAUSAL_LM wrapper would impose HF's forward signature."""
        return LoraConfig(
            r=self.rank,
            lora_alpha=self.alpha,
            lora_dropout=self.dropout,
            target_modules=list(self.target_modules),
            use_dora=self.use_dora,
            bias="none",
            task_type=task_type,
        )
