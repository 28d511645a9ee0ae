"""Test helper datamodule: embedded-corpus text as fixed-length token rows, served as a
deterministic, rank-aware, resumable stream. Global batch g of step s is rows
[(s*g + i) mod N for i < g]; rank r of W takes the r-th contiguous slice, so 1 process with g rows
and W processes with g/W rows each see the same global batch."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, IterableDataset

from lmforge.data.default_corpus import iter_corpus_texts
from lmforge.tokenizer import Tokenizer


class _Stream(IterableDataset):
    def __init__(self, rows: torch.Tensor, global_batch: int, rank: int, world: int, start_step: int) -> None:
        self.rows, self.global_batch, self.rank, self.world, self.start_step = rows, global_batch, rank, world, start_step

    def __iter__(self):
        local = self.global_batch // self.world
        step = self.start_step
        while True:
            index = (step * self.global_batch + torch.arange(self.global_batch)) % len(self.rows)
            yield {"input_ids": self.rows[index[self.rank * local:(self.rank + 1) * local]]}
            step += 1


class CorpusRowsDataModule(L.LightningDataModule):
    def __init__(self, tokenizer_path: str, corpus_dir: str, seq_len: int = 32, global_batch_size: int = 8,
                 max_tokens: int = 40_000, val_rows: int = 32) -> None:
        super().__init__()
        tokenizer = Tokenizer.load(tokenizer_path)
        ids: list[int] = []
        for text in iter_corpus_texts(Path(corpus_dir)):
            ids += tokenizer.encode(text[:3000]) + [tokenizer.eos_id]
            if len(ids) >= max_tokens:
                break
        width = seq_len + 1
        rows = torch.tensor(ids[: len(ids) // width * width]).view(-1, width)
        self.val, self.train = rows[:val_rows], rows[val_rows:]
        self.global_batch_size = global_batch_size
        self.start_step = 0

    def train_dataloader(self) -> DataLoader:
        world, rank = self.trainer.world_size, self.trainer.global_rank
        return DataLoader(_Stream(self.train, self.global_batch_size, rank, world, self.start_step), batch_size=None)

    def val_dataloader(self) -> DataLoader:
        world, rank = self.trainer.world_size, self.trainer.global_rank
        local = self.val[rank::world]
        return DataLoader([{"input_ids": r} for r in local], batch_size=4)

    def state_dict(self) -> dict:
        # Batches the optimizer has consumed (the loader prefetches, so its own count runs ahead).
        return {"step": self.trainer.global_step}

    def load_state_dict(self, state: dict) -> None:
        self.start_step = state["step"]
