"""Benchmark loaders. Each reads the upstream file layout from a local path (the shared
read-only copies in ../shared/benchmarks by default) and returns plain dicts.

Accepted layouts:
- MMLU: hendrycks/test `data/` dir (`dev/`, `val/`, `test/` with `<subject>_<split>.csv`, no
  header) or a dir/file of HF `cais/mmlu` style JSONL/parquet rows (question, choices, answer).
- GSM8K: openai/grade-school-math JSONL (`train.jsonl`, `test.jsonl`) or HF parquet.
- HumanEval: `HumanEval.jsonl(.gz)` from openai/human-eval.
- MT-Bench: FastChat's `question.jsonl`, `judge_prompts.jsonl`, `reference_answer/*.jsonl`.
"""

from __future__ import annotations

import csv
import gzip
import json
import logging
from pathlib import Path

log = logging.getLogger(__name__)
LETTERS = ("A", "B", "C", "D")


def read_jsonl(path: str | Path) -> list[dict]:
    """All rows of a benchmark file (.jsonl or .jsonl.gz); a bad line is an error, since a benchmark
    missing rows would change its score. (`lmforge.data.chat.iter_jsonl_records` skips bad
    training lines instead.)"""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    rows = []
    with opener(path, "rt", encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{line_no}: not valid JSON ({err.msg})") from err
    return rows


def _read_rows(path: Path) -> list[dict]:
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq  # optional: only for HF-hub parquet layouts

        return pq.read_table(path).to_pylist()
    return read_jsonl(path)


def _require(path: Path, what: str) -> Path:
    if not path.exists():
        raise FileNotFoundError(f"{what}: {path} does not exist (set the task's `path` in conf/eval/)")
    return path


# ----------------------------------------------------------------------------- MMLU


def mmlu_subjects(root: str | Path) -> list[str]:
    dev = _require(Path(root) / "dev", "MMLU dev split")
    return sorted(p.name[: -len("_dev.csv")] for p in dev.glob("*_dev.csv"))


def load_mmlu(root: str | Path, subject: str, split: str) -> list[dict]:
    """Rows {subject, question, choices[4], answer (0-3)} of one subject and split."""
    root = Path(root)
    csv_path = root / split / f"{subject}_{split}.csv"
    if csv_path.exists():
        rows = []
        with open(csv_path, newline="", encoding="utf-8") as handle:
            for line_no, record in enumerate(csv.reader(handle), 1):
                if len(record) != 6 or record[5].strip() not in LETTERS:
                    raise ValueError(
                        f"{csv_path}:{line_no}: expected question,A,B,C,D,letter; got {len(record)} fields"
                    )
                rows.append(
                    {
                        "subject": subject,
                        "question": record[0],
                        "choices": record[1:5],
                        "answer": LETTERS.index(record[5].strip()),
                    }
                )
        return rows
    for candidate in (root / subject / f"{split}.jsonl", root / subject / f"{split}.parquet"):
        if candidate.exists():
            return [{"subject": subject, **row} for row in _read_rows(candidate)]
    raise FileNotFoundError(f"MMLU {subject}/{split}: neither {csv_path} nor {root / subject}/{split}.(jsonl|parquet)")


# ----------------------------------------------------------------------------- GSM8K


def load_gsm8k(root: str | Path, split: str) -> list[dict]:
    """The benchmark's raw rows of one split (a dataset folder); SFT reads GSM8K as conversations
    with `lmforge.data.chat.gsm8k_conversations` instead."""
    root = Path(root)
    for candidate in (root / f"{split}.jsonl", root / "main" / f"{split}-00000-of-00001.parquet"):
        if candidate.exists():
            return _read_rows(candidate)
    raise FileNotFoundError(f"GSM8K {split}: no {root}/{split}.jsonl")


# ----------------------------------------------------------------------------- HumanEval


def load_humaneval(path: str | Path) -> list[dict]:
    path = Path(path)
    if path.is_dir():
        candidates = [path / "HumanEval.jsonl.gz", path / "HumanEval.jsonl"]
        path = next((p for p in candidates if p.exists()), candidates[0])
    rows = read_jsonl(_require(path, "HumanEval"))
    for row in rows:
        missing = {"task_id", "prompt", "entry_point", "test"} - row.keys()
        if missing:
            raise ValueError(f"{path}: problem {row.get('task_id')} lacks {sorted(missing)}")
    return rows


# ----------------------------------------------------------------------------- MT-Bench


def load_mt_bench(root: str | Path) -> tuple[list[dict], dict[str, dict], dict[int, dict]]:
    """(questions, judge prompts by name, reference answers by question_id)."""
    root = Path(root)
    questions = read_jsonl(_require(root / "question.jsonl", "MT-Bench questions"))
    prompts = {p["name"]: p for p in read_jsonl(_require(root / "judge_prompts.jsonl", "MT-Bench judge prompts"))}
    references: dict[int, dict] = {}
    for ref_file in sorted(root.glob("reference_answer*.jsonl")) + sorted(root.glob("reference_answer/*.jsonl")):
        for row in read_jsonl(ref_file):
            references.setdefault(row["question_id"], row)
    return questions, prompts, references
