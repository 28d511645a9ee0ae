"""Callbacks the end-to-end tests inject through the CLI (`+callbacks.x._target_=fault_injection...`)
to crash or corrupt a run at an exact step."""

from __future__ import annotations

import os
import signal

import lightning as L
import torch


class KillAtStep(L.Callback):
    """SIGKILL this process when `global_step` reaches `step`: no cleanup, no final checkpoint."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


class PoisonWeightsAtStep(L.Callback):
    """Write NaN into one weight matrix right before the forward pass of `step`."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            with torch.no_grad():
                pl_module.model.layers[0].mlp.up_proj.weight.fill_(float("nan"))
