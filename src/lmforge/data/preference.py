"""Preference pairs (prompt, chosen, rejected) for the reward model and DPO.

Reads `{"prompt", "chosen", "rejected"}` JSONL, where each field is either a string or a list
of chat messages (TRL's "conversational" form), or generates pairs from the verifiable tasks.
A batch stacks the B chosen rows over the B rejected rows ([2B, T]) so one forward scores both.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader

from lmforge.data import tasks as task_gen
from lmforge.data.chat import (
    Conversation,
    EncodedConversation,
    ListDataset,
    TaskSource,
    is_valid_conversation,
    iter_jsonl_records,
    shifted_labels,
)
from lmforge.data.labels import IGNORE_INDEX
from lmforge.tokenizer import Tokenizer

log = logging.getLogger(__name__)


@dataclass
class PreferencePair:
    prompt: Conversation  # the turns before the compared responses
    chosen: Conversation  # the compared assistant turn(s)
    rejected: Conversation


def _as_prompt(value: object) -> Conversation | None:
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    if isinstance(value, list) and all(isinstance(m, dict) and "role" in m and "content" in m for m in value):
        return [{"role": m["role"], "content": m["content"]} for m in value]
    return None


def _as_response(value: object) -> Conversation | None:
    if isinstance(value, str):
        return [{"role": "assistant", "content": value}]
    if is_valid_conversation(value):
        return [{"role": m["role"], "content": m["content"]} for m in value]
    return None


def pair_from_record(record: dict) -> PreferencePair | None:
    prompt = _as_prompt(record.get("prompt"))
    chosen, rejected = _as_response(record.get("chosen")), _as_response(record.get("rejected"))
    if prompt is None or chosen is None or rejected is None:
        return None
    return PreferencePair(prompt, chosen, rejected)


def load_preference_jsonl(path: str | Path, limit: int | None = None) -> list[PreferencePair]:
    """Corrupt lines (bad JSON, missing or malformed fields) are skipped, counted and reported."""
    pairs: list[PreferencePair] = []
    bad: list[int] = []
    for lineno, record in iter_jsonl_records(path):
        pair = pair_from_record(record) if isinstance(record, dict) else None
        if pair is None:
            bad.append(lineno)
            continue
        pairs.append(pair)
        if limit is not None and len(pairs) >= limit:
            break
    if bad:
        log.warning("%s: skipped %d corrupt preference record(s) (first at lines %s)", path, len(bad), bad[:5])
    return pairs


def task_pairs(source: TaskSource, split: str) -> list[PreferencePair]:
    n = source.n_train if split == "train" else source.n_val
    task_split = "train" if split == "train" else "heldout"
    rng = random.Random(f"{source.seed}:{split}:rejected")
    tasks = task_gen.make_tasks(source.kind, n, source.seed, task_split)
    return [pair_from_record(task_gen.preference_record(t, rng)) for t in tasks]


@dataclass
class EncodedPair:
    chosen: EncodedConversation  # labels cover the completion tokens only
    rejected: EncodedConversation
    index: int  # position in its dataset: the key for cached reference log-probs


def encode_completion(
    tokenizer: Tokenizer, prompt: Conversation, response: Conversation, max_len: int
) -> EncodedConversation | None:
    ids, trainable = tokenizer.encode_chat(prompt + response)
    n_prompt = len(tokenizer.encode_chat(prompt, add_generation_prompt=False)[0])
    # Only the response's assistant tokens count; an assistant turn inside the prompt does not.
    trainable = [flag and i >= n_prompt for i, flag in enumerate(trainable)]
    ids, trainable = ids[:max_len], trainable[:max_len]
    labels = shifted_labels(ids, trainable)
    if all(label == IGNORE_INDEX for label in labels):
        return None
    return EncodedConversation(ids, labels)


def encode_pairs(tokenizer: Tokenizer, pairs: Sequence[PreferencePair], max_len: int, what: str) -> list[EncodedPair]:
    out: list[EncodedPair] = []
    dropped = 0
    for pair in pairs:
        chosen = encode_completion(tokenizer, pair.prompt, pair.chosen, max_len)
        rejected = encode_completion(tokenizer, pair.prompt, pair.rejected, max_len)
        if chosen is None or rejected is None:
            dropped += 1
            continue
        out.append(EncodedPair(chosen, rejected, index=len(out)))
    if dropped:
        log.warning("%s: dropped %d pair(s) whose completion lies beyond %d tokens", what, dropped, max_len)
    return out


@dataclass
class PreferenceCollator:
    """[2B, T] batch: rows 0..B-1 chosen, B..2B-1 rejected, right-padded.

    `last_index` is each row's last real token (the reward head reads its hidden state);
    `reference_logps` [B, 2] (chosen, rejected) rides along once a reference has been cached.
    """

    pad_id: int
    reference_logps: torch.Tensor | None = None  # [N, 2] for the whole dataset

    def __call__(self, pairs: Sequence[EncodedPair]) -> dict[str, torch.Tensor]:
        rows = [p.chosen for p in pairs] + [p.rejected for p in pairs]
        width = max(len(r.input_ids) for r in rows)
        input_ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
        for i, r in enumerate(rows):
            input_ids[i, : len(r.input_ids)] = torch.tensor(r.input_ids)
            labels[i, : len(r.labels)] = torch.tensor(r.labels)
        index = torch.tensor([p.index for p in pairs], dtype=torch.long)
        batch = {
            "input_ids": input_ids,
            "labels": labels,
            "last_index": torch.tensor([len(r.input_ids) - 1 for r in rows], dtype=torch.long),
            "index": index,
        }
        if self.reference_logps is not None:
            batch["reference_logps"] = self.reference_logps[index]
        return batch


class PreferenceDataModule(L.LightningDataModule):
    """Pairs from `train_path`/`val_path` JSONL and/or generated tasks (held-out split for val)."""

    def __init__(
        self,
        tokenizer_path: str,
        train_path: str | None = None,
        val_path: str | None = None,
        tasks: dict | TaskSource | None = None,
        max_seq_len: int = 256,
        batch_size: int = 16,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        self.tokenizer_path = tokenizer_path
        self.train_path, self.val_path = train_path, val_path
        self.task_source = TaskSource(**tasks) if isinstance(tasks, dict) else tasks
        self.max_seq_len, self.batch_size, self.num_workers = max_seq_len, batch_size, num_workers
        self.datasets: dict[str, ListDataset] = {}
        self.reference_logps: dict[str, torch.Tensor] = {}

    def pairs(self, split: str) -> list[PreferencePair]:
        out: list[PreferencePair] = []
        path = self.train_path if split == "train" else self.val_path
        if path:
            out += load_preference_jsonl(path)
        if self.task_source is not None and (split == "train" or not self.val_path):
            out += task_pairs(self.task_source, split)
        if not out:
            raise ValueError(f"no {split} preference pairs: set datamodule.train_path/val_path or tasks")
        return out

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        tokenizer = Tokenizer.load(self.tokenizer_path)
        self.pad_id = tokenizer.pad_id
        for split in ("train", "val"):
            self.datasets[split] = ListDataset(encode_pairs(tokenizer, self.pairs(split), self.max_seq_len, split))
        log.info("preference data: %d train / %d val pairs", len(self.datasets["train"]), len(self.datasets["val"]))

    def attach_reference_logps(self, split: str, logps: torch.Tensor) -> None:
        """Make every later batch of `split` carry precomputed reference log-probs [N, 2]."""
        if len(logps) != len(self.datasets[split]):
            raise ValueError(f"{split}: {len(logps)} reference log-probs for {len(self.datasets[split])} pairs")
        self.reference_logps[split] = logps

    def loader(self, split: str, shuffle: bool = False, with_reference: bool = True) -> DataLoader:
        reference = self.reference_logps.get(split) if with_reference else None
        return DataLoader(
            self.datasets[split],
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            collate_fn=PreferenceCollator(self.pad_id, reference),
        )

    def train_dataloader(self) -> DataLoader:
        return self.loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self.loader("val")
