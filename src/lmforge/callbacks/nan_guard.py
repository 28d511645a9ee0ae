"""Stop training at the first non-finite loss, before it reaches the weights."""

from __future__ import annotations

import lightning as L
import torch


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN/Inf; the last checkpoint on disk still holds good weights."""


class NonFiniteGuard(L.Callback):
    """Raises before backward when the loss is NaN/Inf, so no optimizer step applies it and
    `last.ckpt` keeps the last good weights. Raising (rather than `trainer.should_stop`) makes the
    run exit non-zero and skips the end-of-training checkpoint that would store bad weights."""

    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor) -> None:
        if torch.isfinite(loss).all():
            return
        checkpoints = [c for c in trainer.checkpoint_callbacks if getattr(c, "last_model_path", "")]
        last_good = checkpoints[0].last_model_path if checkpoints else None
        raise NonFiniteLossError(
            f"training loss is {loss.item()} at global step {trainer.global_step} "
            f"(epoch {trainer.current_epoch}); stopped before the optimizer step. "
            + (f"Last good checkpoint: {last_good}. " if last_good else "No checkpoint was written yet. ")
            + "Try a lower optim.lr, more optim.warmup_steps, trainer.gradient_clip_val or precision=bf16-mixed."
        )
