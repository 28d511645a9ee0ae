"""Chat SFT data: loaders for the public formats, encoding, padding, packing, the DataModule.

A conversation is encoded through `Tokenizer.encode_chat`, whose mask marks assistant tokens.
Labels are shifted here (`labels[t]` = token t+1) and set to -100 wherever the next token is
not assistant output, so the loss covers assistant tokens only: never prompt or padding.

Packing puts several conversations in one row. Position ids restart at 0 for each one and a
block-diagonal causal mask keeps attention inside each conversation, so a packed row gives
every conversation the same logits it would get alone.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from lmforge.data import tasks as task_gen
from lmforge.data.labels import IGNORE_INDEX
from lmforge.tokenizer import Tokenizer

log = logging.getLogger(__name__)
ROLES = ("system", "user", "assistant")
Conversation = list[dict]


# ---------------------------------------------------------------- loaders
def iter_jsonl_records(path: str | Path) -> Iterable[tuple[int, dict | None]]:
    """(line number, record) per non-empty line; record is None when the line is not JSON."""
    with Path(path).open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield lineno, json.loads(line)
            except json.JSONDecodeError:
                yield lineno, None


def is_valid_conversation(messages: object) -> bool:
    return (
        isinstance(messages, list)
        and len(messages) > 0
        and all(isinstance(m, dict) and m.get("role") in ROLES and isinstance(m.get("content"), str) for m in messages)
        and any(m["role"] == "assistant" for m in messages)
    )


def load_messages_jsonl(path: str | Path, limit: int | None = None) -> list[Conversation]:
    """HF-style chat JSONL: one `{"messages": [{"role", "content"}, ...]}` per line.

    Corrupt lines (bad JSON, unknown roles, no assistant turn) are skipped, counted and reported.
    """
    conversations: list[Conversation] = []
    bad: list[int] = []
    for lineno, record in iter_jsonl_records(path):
        messages = record.get("messages") if isinstance(record, dict) else None
        if not is_valid_conversation(messages):
            bad.append(lineno)
            continue
        conversations.append([{"role": m["role"], "content": m["content"]} for m in messages])
        if limit is not None and len(conversations) >= limit:
            break
    if bad:
        log.warning("%s: skipped %d corrupt record(s) (first at lines %s)", path, len(bad), bad[:5])
    return conversations


_CALCULATOR_ANNOTATION = re.compile(r"<<[^>]*>>")


def gsm8k_to_conversation(question: str, answer: str) -> Conversation:
    """GSM8K's worked solution ending in '#### N', rewritten to end in our 'Answer: N' line."""
    reasoning, _, final = answer.rpartition("####")
    reasoning = _CALCULATOR_ANNOTATION.sub("", reasoning).strip()
    response = task_gen.format_response(final.strip(), reasoning)
    return [{"role": "user", "content": question.strip()}, {"role": "assistant", "content": response}]


def gsm8k_conversations(path: str | Path, limit: int | None = None) -> list[Conversation]:
    """GSM8K JSONL ({"question", "answer"}) as SFT conversations; read in place, never copied."""
    conversations: list[Conversation] = []
    bad: list[int] = []
    for lineno, record in iter_jsonl_records(path):
        if not isinstance(record, dict) or "####" not in str(record.get("answer", "")) or not record.get("question"):
            bad.append(lineno)
            continue
        conversations.append(gsm8k_to_conversation(record["question"], record["answer"]))
        if limit is not None and len(conversations) >= limit:
            break
    if bad:
        log.warning("%s: skipped %d corrupt GSM8K record(s) (first at lines %s)", path, len(bad), bad[:5])
    return conversations


# ---------------------------------------------------------------- encoding
@dataclass
class EncodedConversation:
    input_ids: list[int]
    labels: list[int]  # shifted: labels[t] is the target at position t, or IGNORE_INDEX


def shifted_labels(ids: Sequence[int], trainable: Sequence[bool]) -> list[int]:
    """labels[t] = ids[t+1] where token t+1 is trainable; the last position predicts nothing."""
    labels = [ids[t + 1] if trainable[t + 1] else IGNORE_INDEX for t in range(len(ids) - 1)]
    return labels + [IGNORE_INDEX]


def encode_conversation(tokenizer: Tokenizer, messages: Conversation, max_len: int) -> EncodedConversation | None:
    """Tokens and assistant-only labels, truncated to max_len; None if nothing is left to train on."""
    ids, trainable = tokenizer.encode_chat(messages)
    ids, trainable = ids[:max_len], trainable[:max_len]
    labels = shifted_labels(ids, trainable)
    if all(label == IGNORE_INDEX for label in labels):
        return None
    return EncodedConversation(ids, labels)


def encode_all(
    tokenizer: Tokenizer, conversations: Iterable[Conversation], max_len: int, what: str
) -> list[EncodedConversation]:
    encoded, dropped = [], 0
    for messages in conversations:
        example = encode_conversation(tokenizer, messages, max_len)
        if example is None:
            dropped += 1
        else:
            encoded.append(example)
    if dropped:
        log.warning("%s: dropped %d conversation(s) with no assistant tokens within %d tokens", what, dropped, max_len)
    return encoded


# ---------------------------------------------------------------- batching
def pad_batch(examples: Sequence[EncodedConversation], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded batch. Causal attention needs no mask: padding sits after every real token."""
    width = max(len(e.input_ids) for e in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    segment_ids = torch.full((len(examples), width), -1, dtype=torch.long)
    for row, e in enumerate(examples):
        n = len(e.input_ids)
        input_ids[row, :n] = torch.tensor(e.input_ids)
        labels[row, :n] = torch.tensor(e.labels)
        segment_ids[row, :n] = row
    return {"input_ids": input_ids, "labels": labels, "segment_ids": segment_ids}


def pack_rows(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """First-fit-decreasing bin packing of example indices into rows of `capacity` tokens."""
    rows: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        for r, free in enumerate(room):
            if lengths[i] <= free:
                rows[r].append(i)
                room[r] -= lengths[i]
                break
        else:
            rows.append([i])
            room.append(capacity - lengths[i])
    return rows


def block_causal_mask(segment_ids: torch.Tensor) -> torch.Tensor:
    """[B, 1, T, T] bool: query t may see key s iff s <= t and both are in the same segment.

    Padding (segment -1) attends to itself only, which keeps SDPA rows from being all-False.
    """
    t = segment_ids.shape[1]
    causal = torch.ones(t, t, dtype=torch.bool, device=segment_ids.device).tril()
    same = segment_ids[:, :, None] == segment_ids[:, None, :]
    return (same & causal)[:, None]


def packed_batch(examples: Sequence[EncodedConversation], capacity: int, pad_id: int) -> dict[str, torch.Tensor]:
    """Several conversations per row: restarting position ids + block-diagonal causal attention.

    `segment_ids` number conversations in the order given (so per-example losses line up with
    an unpacked batch of the same examples).
    """
    rows = pack_rows([len(e.input_ids) for e in examples], capacity)
    input_ids = torch.full((len(rows), capacity), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), capacity), IGNORE_INDEX, dtype=torch.long)
    position_ids = torch.zeros((len(rows), capacity), dtype=torch.long)
    segment_ids = torch.full((len(rows), capacity), -1, dtype=torch.long)
    for row, members in enumerate(rows):
        start = 0
        for i in members:
            e, n = examples[i], len(examples[i].input_ids)
            input_ids[row, start : start + n] = torch.tensor(e.input_ids)
            labels[row, start : start + n] = torch.tensor(e.labels)
            position_ids[row, start : start + n] = torch.arange(n)
            segment_ids[row, start : start + n] = i
            start += n
    return {
        "input_ids": input_ids,
        "labels": labels,
        "position_ids": position_ids,
        "segment_ids": segment_ids,
        # Document ids, not a dense [B, 1, T, T] mask: the model attends block-diagonally from
        # them (lmforge.model.DocumentMask), with the same rule as `block_causal_mask`.
        "attn_mask": segment_ids.clone(),
    }


class ListDataset(Dataset):
    def __init__(self, items: Sequence) -> None:
        self.items = list(items)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        return self.items[index]


@dataclass
class ChatCollator:
    pad_id: int
    pack: bool = False
    max_seq_len: int = 256

    def __call__(self, examples: Sequence[EncodedConversation]) -> dict[str, torch.Tensor]:
        if self.pack:
            return packed_batch(examples, self.max_seq_len, self.pad_id)
        return pad_batch(examples, self.pad_id)


# ---------------------------------------------------------------- sources shared with preference data
@dataclass
class TaskSource:
    """Generated verifiable tasks (`lmforge.data.tasks`): n_train train-split, n_val held-out."""

    kind: str = "mix"
    n_train: int = 2000
    n_val: int = 200
    seed: int = 0


class ChatDataModule(L.LightningDataModule):
    """SFT conversations from any mix of: a messages JSONL, GSM8K's train split, generated tasks.

    Validation: `val_path` when given, else the held-out split of the generated tasks.
    """

    def __init__(
        self,
        tokenizer_path: str,
        train_path: str | None = None,
        val_path: str | None = None,
        gsm8k_path: str | None = None,
        gsm8k_limit: int | None = None,
        tasks: dict | TaskSource | None = None,
        max_seq_len: int = 256,
        batch_size: int = 16,
        pack: bool = False,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        self.tokenizer_path = tokenizer_path
        self.train_path, self.val_path = train_path, val_path
        self.gsm8k_path, self.gsm8k_limit = gsm8k_path, gsm8k_limit
        self.task_source = TaskSource(**tasks) if isinstance(tasks, dict) else tasks
        self.max_seq_len, self.batch_size = max_seq_len, batch_size
        self.pack, self.num_workers = pack, num_workers
        self.train_set: ListDataset | None = None
        self.val_set: ListDataset | None = None

    def conversations(self, split: str) -> list[Conversation]:
        out: list[Conversation] = []
        path = self.train_path if split == "train" else self.val_path
        if path:
            out += load_messages_jsonl(path)
        if split == "train" and self.gsm8k_path:
            out += gsm8k_conversations(self.gsm8k_path, self.gsm8k_limit)
        src = self.task_source
        if src is not None and (split == "train" or not self.val_path):
            n = src.n_train if split == "train" else src.n_val
            task_split = "train" if split == "train" else "heldout"
            out += [task_gen.sft_record(t)["messages"] for t in task_gen.make_tasks(src.kind, n, src.seed, task_split)]
        if not out:
            raise ValueError(f"no {split} conversations: set datamodule.train_path/val_path, gsm8k_path or tasks")
        return out

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        tokenizer = Tokenizer.load(self.tokenizer_path)
        self.pad_id = tokenizer.pad_id
        self.train_set = ListDataset(encode_all(tokenizer, self.conversations("train"), self.max_seq_len, "train"))
        self.val_set = ListDataset(encode_all(tokenizer, self.conversations("val"), self.max_seq_len, "val"))
        log.info("chat data: %d train / %d val conversations", len(self.train_set), len(self.val_set))

    def _loader(self, dataset: ListDataset, shuffle: bool) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            collate_fn=ChatCollator(self.pad_id, self.pack, self.max_seq_len),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False)
