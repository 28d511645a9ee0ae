"""TokenShardDataModule under a real Lightning Trainer: a resumed fit continues the exact sample stream."""

from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from lmforge.data.token_shards import TokenShardDataModule


class RecordingModule(L.LightningModule):
    """The smallest trainable module; remembers every batch it trained on."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.seen: list[torch.Tensor] = []

    def training_step(self, batch, batch_idx):
        self.seen.append(batch["input_ids"].clone())
        return (self.weight * batch["input_ids"].float().mean()).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


def _fit(
    shards: Path, words_tokenizer_dir: Path, root: Path, max_steps: int, ckpt: str | None = None
) -> RecordingModule:
    module = RecordingModule()
    dm = TokenShardDataModule(str(shards), str(words_tokenizer_dir), {"prose": 2, "code": 1}, batch_size=3, seed=5)
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=max_steps,
        accumulate_grad_batches=2,
        logger=False,
        limit_val_batches=0,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=root,
        callbacks=[ModelCheckpoint(dirpath=root / "ckpt", save_last=True, save_top_k=0, every_n_train_steps=3)],
    )
    trainer.fit(module, datamodule=dm, ckpt_path=ckpt)
    return module


def test_resumed_fit_trains_on_exactly_the_remaining_batches(shards, words_tokenizer_dir, tmp_path):
    uninterrupted = _fit(shards, words_tokenizer_dir, tmp_path / "a", max_steps=7).seen
    _fit(shards, words_tokenizer_dir, tmp_path / "b", max_steps=3)  # checkpoint after 3 steps = 6 batches
    last = tmp_path / "b" / "ckpt" / "last.ckpt"
    saved = torch.load(last, weights_only=False)["TokenShardDataModule"]  # Lightning's key: the class name
    assert saved["batches_consumed"] == 6
    resumed = _fit(shards, words_tokenizer_dir, tmp_path / "b", max_steps=7, ckpt=str(last)).seen
    assert len(uninterrupted) == 14 and len(resumed) == 8
    assert all(torch.equal(a, b) for a, b in zip(uninterrupted[6:], resumed, strict=True))
