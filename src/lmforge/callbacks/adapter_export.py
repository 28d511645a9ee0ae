"""Standard peft adapter directories from a `peft=lora|dora|qlora` run, at each checkpoint and at the end.

    <run_dir>/adapters/step-000050/   adapter_config.json + adapter_model.safetensors (each checkpoint)
    <run_dir>/adapters/final/         the same at the end of training
    <run_dir>/adapters/base/          the HF Llama base, when the run did not start from one

`adapter_config.json` names the base (`base_model_name_or_path`): an explicit `base_model`, else
`init_from` when that is an HF directory, else the base written once under `adapters/base/` (the
frozen weights of a Lightning checkpoint or of the random init cannot be loaded by peft otherwise).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

from lmforge.checkpoint import is_hf_dir, load_for_inference, resolve_checkpoint
from lmforge.hf import export_hf
from lmforge.lora import base_transformer, is_lora
from lmforge.lora.adapter_files import adapter_state_dict, hf_adapter_config, write_adapter
from lmforge.lora.quantize import has_quantized_weights

log = logging.getLogger(__name__)


class AdapterExport(Callback):
    def __init__(self, dirpath: str, base_model: str | None = None, export_base: bool = True) -> None:
        self.dirpath = Path(dirpath)
        self.base_model = base_model
        self.export_base = export_base
        self._written_step: int | None = None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        model = getattr(pl_module, "model", None)
        if not is_lora(model):
            raise ValueError("callbacks.adapter_export writes peft adapters; it needs peft=lora|dora|qlora")
        if getattr(pl_module, "stage_name", "") == "reward":
            log.warning("stage=reward: the adapters hold the backbone's LoRA only, not the reward head")
        self.base_model = self._base_model(trainer, pl_module)

    def _base_model(self, trainer: L.Trainer, pl_module: Any) -> str | None:
        if self.base_model:
            return str(self.base_model)
        init_from = getattr(pl_module, "init_from", None)
        if init_from and is_hf_dir(resolve_checkpoint(init_from)):
            return str(resolve_checkpoint(init_from).resolve())
        if not self.export_base:
            return str(init_from) if init_from else None
        base_dir = self.dirpath / "base"
        if has_quantized_weights(pl_module.model) and init_from:
            # QLoRA: the dense parent, which users quantize again on load, not its dequantized copy.
            base = load_for_inference(init_from).model
        else:
            base = base_transformer(pl_module.model)  # every rank: gathers FSDP2 shards
        if trainer.is_global_zero:
            dtype = next(base.parameters()).dtype
            export_hf(base, base_dir, pl_module.tokenizer, dtype=dtype, manifest={"parent": init_from})
            log.info("adapter base (the frozen model under the adapter) written to %s", base_dir)
        return str(base_dir.resolve())

    def _write(self, trainer: L.Trainer, pl_module: Any, directory: Path) -> None:
        state = adapter_state_dict(pl_module.model)  # every rank: gathers FSDP2 shards
        if trainer.is_global_zero:
            write_adapter(state, hf_adapter_config(pl_module.model, self.base_model), directory)
            log.info("peft adapter (step %d) written to %s", trainer.global_step, directory)

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        if trainer.sanity_checking or self._written_step == trainer.global_step:
            return  # a step's last.ckpt and best checkpoint share one adapter directory
        self._write(trainer, pl_module, self.dirpath / f"step-{trainer.global_step:06d}")
        self._written_step = trainer.global_step

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._write(trainer, pl_module, self.dirpath / "final")
