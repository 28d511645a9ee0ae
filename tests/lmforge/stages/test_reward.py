"""Reward model: the head reads the last real token, and a short CPU run learns the preferences."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from lmforge.data.preference import PreferenceDataModule
from lmforge.losses import score_last_token
from lmforge.stages.reward import RewardStage


@pytest.mark.parity
def test_reward_reads_last_real_token_regardless_of_padding(model_cfg, task_tokenizer_dir):
    stage = RewardStage(model=model_cfg, optim={}, tokenizer_path=task_tokenizer_dir)
    stage.configure_model()
    torch.nn.init.normal_(stage.reward_head.weight)
    dm = PreferenceDataModule(task_tokenizer_dir, tasks={"kind": "mix", "n_train": 8, "n_val": 4}, batch_size=8)
    dm.setup()
    batch = next(iter(dm.loader("train")))
    with torch.no_grad():
        batched = score_last_token(stage.model, stage.reward_head, batch["input_ids"], batch["last_index"])
        for row in (0, 9):  # a chosen and a rejected row, each scored alone without padding
            n = int(batch["last_index"][row]) + 1
            alone = score_last_token(
                stage.model, stage.reward_head, batch["input_ids"][row : row + 1, :n], torch.tensor([n - 1])
            )
            torch.testing.assert_close(batched[row : row + 1], alone, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_reward_model_beats_chance_on_heldout_pairs_after_short_cpu_run(task_tokenizer_dir):
    torch.set_num_threads(2)
    L.seed_everything(0)
    dm = PreferenceDataModule(
        task_tokenizer_dir,
        tasks={"kind": "mix", "n_train": 2000, "n_val": 200, "seed": 0},
        max_seq_len=96,
        batch_size=32,
    )
    model = dict(vocab_size=512, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=128, max_seq_len=96)
    stage = RewardStage(
        model=model, optim={"lr": 3e-3, "warmup_steps": 10, "weight_decay": 0.0}, tokenizer_path=task_tokenizer_dir
    )
    trainer = L.Trainer(
        max_steps=150,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(stage, datamodule=dm)
    (metrics,) = trainer.validate(stage, datamodule=dm, verbose=False)
    # 200 held-out pairs: chance is 0.5 +- 0.035, so 0.6 is ~3 standard deviations above it.
    assert metrics["val/accuracy"] > 0.6, metrics
