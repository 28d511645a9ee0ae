"""`last.ckpt` that always holds the final step of a completed run."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint


class LastCheckpoint(ModelCheckpoint):
    """Lightning's `ModelCheckpoint` that also writes `last.ckpt` when training ends normally.

    Lightning's own `on_train_end` saves `last` only when no checkpoint was written yet, so a
    60-step run saving every 7 steps would end with `last.ckpt` at step 56. This one saves at
    the final step unless that step is already on disk. A run that raises (the NaN guard, an
    interrupt) never reaches `on_train_end`, so its `last.ckpt` keeps the last good step.
    """

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.save_last and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
            return
        super().on_train_end(trainer, pl_module)
