"""Tokens/s and model FLOPs utilisation (MFU) of the training loop.

FLOPs per token come from `ModelConfig.flops_per_token` (6N + causal attention, PaLM appendix B),
so MFU compares the model's useful matmul work with the accelerator's peak, independent of
recomputation (activation checkpointing does not raise MFU). Lightning's `Throughput` keeps the
rolling window; validation time is excluded from the clock.
"""

from __future__ import annotations

import time
from typing import Any

import lightning as L
import torch
from lightning.fabric.utilities.throughput import Throughput


class ThroughputMFU(L.Callback):
    def __init__(self, peak_flops_per_second: float | None = None, window_size: int = 10) -> None:
        self.peak_flops_per_second = peak_flops_per_second
        self.window_size = window_size
        self._throughput: Throughput | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._throughput = Throughput(
            available_flops=self.peak_flops_per_second, world_size=trainer.world_size, window_size=self.window_size
        )
        self._train_time = 0.0
        self._batches = self._samples = self._tokens = 0
        self._step_start: float | None = None

    def _sync(self, trainer: L.Trainer) -> None:
        if trainer.strategy.root_device.type == "cuda":  # CUDA runs async: time the finished work
            torch.cuda.synchronize(trainer.strategy.root_device)

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self._step_start is None:
            self._sync(trainer)
            self._step_start = time.perf_counter()

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._step_start = None  # the clock restarts at the next training batch

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._sync(trainer)
        now = time.perf_counter()
        self._train_time += now - self._step_start
        self._step_start = now  # data loading of the next batch counts as training time
        tokens = pl_module.batch_tokens(batch)
        self._batches += 1
        self._samples += pl_module.batch_size_of(batch)
        self._tokens += tokens
        self._throughput.update(
            time=self._train_time,
            batches=self._batches,
            samples=self._samples,
            lengths=self._tokens,
            flops=int(tokens * pl_module.flops_per_token(batch)),
        )
        metrics = self._throughput.compute()
        logged = {"perf/tokens_seen": float(self._tokens * trainer.world_size)}
        if "device/items_per_sec" in metrics:
            logged["perf/tokens_per_sec"] = metrics["device/items_per_sec"] * trainer.world_size
            logged["perf/tokens_per_sec_per_device"] = metrics["device/items_per_sec"]
        if "device/mfu" in metrics:
            logged["perf/mfu"] = metrics["device/mfu"]
        pl_module.log_dict(logged, on_step=True, on_epoch=False, rank_zero_only=True)
