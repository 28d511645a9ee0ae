"""RL prompts: generated verifiable tasks or JSONL of task records / GSM8K lines / HumanEval-style
code problems (``prompt``, ``test``, ``entry_point``; rewarded by `code_tests`, rewards/code.py).

Batch: a list of samples {"prompt_ids": list[int], "prompt": str, "task": dict, "answer": str}
(the RL stage samples completions of each prompt, so there is nothing to pad or stack here).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import lightning as L
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, SequentialSampler

from lmforge.data.tasks import CODE_PROBLEM_KEYS, is_code_problem, make_tasks, task_from_record
from lmforge.formats.files import open_maybe_gzip
from lmforge.tokenizer import Tokenizer

log = logging.getLogger(__name__)


def _code_record(rec: dict) -> dict:
    """A HumanEval-style problem as an RL record: the prompt is the signature and docstring; the
    canonical solution, when present, is kept as the reference answer (never shown to the policy)."""
    for key in CODE_PROBLEM_KEYS:
        if not isinstance(rec.get(key), str):
            raise TypeError(f"code problem field {key!r} must be a string")
    keep = {key: rec[key] for key in ("task_id", *CODE_PROBLEM_KEYS) if key in rec}
    return {**keep, "answer": rec.get("canonical_solution", ""), "kind": "code"}


def read_prompt_jsonl(path: str | Path) -> list[dict]:
    """Task records (`task_record`), GSM8K lines {"question", "answer": "...#### N"} or HumanEval-style
    code problems {"prompt", "test", "entry_point"} (``.jsonl`` or ``.jsonl.gz``); bad lines counted and named."""
    path = Path(path)
    with open_maybe_gzip(path) as f:
        text = f.read().decode("utf-8")
    records, bad = [], []
    for line_no, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            if "question" in rec:  # GSM8K: the reference is the number after ####
                final = rec["answer"].split("####")[-1].strip()
                rec = {"prompt": rec["question"], "answer": final, "kind": "gsm8k"}
            elif is_code_problem(rec):  # its tests are the verifier
                rec = _code_record(rec)
            else:
                task_from_record(rec)  # validates the required fields
            records.append(rec)
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError):
            bad.append(line_no)
    if bad:
        log.warning("%s: skipped %d corrupt lines (first: %s)", path, len(bad), bad[:5])
    return records


class RepeatBatchSampler(BatchSampler):
    """Yields every batch of indices `repeats` times in a row, for RL's `num_iterations` > 1."""

    def __init__(self, sampler, batch_size: int, drop_last: bool, repeats: int) -> None:
        super().__init__(sampler, batch_size, drop_last)
        self.repeats = repeats

    def __iter__(self):
        for batch in super().__iter__():
            for _ in range(self.repeats):
                yield batch

    def __len__(self) -> int:
        return super().__len__() * self.repeats


class PromptDataModule(L.LightningDataModule):
    """RL prompts: generated verifiable tasks (train split; held-out split for validation) or JSONL
    of task records / GSM8K lines. Held-out tasks never occur in any train split."""

    def __init__(
        self,
        tokenizer_path: str,
        tasks: dict | None = None,
        train_path: str | None = None,
        val_path: str | None = None,
        batch_size: int = 8,
        max_prompt_len: int = 192,
        repeat_batches: int = 1,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        self.tokenizer = Tokenizer.load(tokenizer_path)
        # dict(): Hydra hands a DictConfig over; its values (kind, sizes, seed) are plain scalars.
        self.tasks = dict(tasks) if tasks else {"kind": "mix", "n_train": 2000, "n_val": 64, "seed": 0}
        self.train_path, self.val_path = train_path, val_path
        self.batch_size, self.max_prompt_len, self.num_workers = batch_size, max_prompt_len, num_workers
        self.repeat_batches = repeat_batches

    def _records(self, path: str | None, split: str, n: int) -> list[dict]:
        if path:
            return read_prompt_jsonl(path)
        tasks = make_tasks(self.tasks["kind"], n=n, seed=self.tasks["seed"], split=split)
        return [{"prompt": t.prompt, "answer": t.answer, "kind": t.kind} for t in tasks]

    def _samples(self, records: list[dict]) -> list[dict]:
        out = []
        for rec in records:
            ids = self._prompt_ids(rec["prompt"])
            out.append(
                {
                    "prompt_ids": ids[-self.max_prompt_len :],
                    "prompt": rec["prompt"],
                    "task": rec,
                    "answer": rec["answer"],
                }
            )
        return out

    def _prompt_ids(self, prompt: str) -> list[int]:
        return self.tokenizer.encode_chat([{"role": "user", "content": prompt}], add_generation_prompt=True)[0]

    def setup(self, stage: str | None = None) -> None:
        self.train_set = self._samples(self._records(self.train_path, "train", self.tasks["n_train"]))
        self.val_set = self._samples(self._records(self.val_path, "heldout", self.tasks["n_val"]))

    def train_dataloader(self) -> DataLoader:
        sampler = RepeatBatchSampler(
            RandomSampler(self.train_set), self.batch_size, drop_last=False, repeats=self.repeat_batches
        )
        return DataLoader(self.train_set, batch_sampler=sampler, collate_fn=list, num_workers=self.num_workers)

    def val_dataloader(self) -> DataLoader:
        sampler = BatchSampler(SequentialSampler(self.val_set), self.batch_size, drop_last=False)
        return DataLoader(self.val_set, batch_sampler=sampler, collate_fn=list, num_workers=self.num_workers)
