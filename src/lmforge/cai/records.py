"""CAI data on disk: prompt sets in, append-only audit logs, and the SFT / DPO files derived from them.

Resumability rests on the audit logs: each is append-only JSONL keyed by the prompt id, written
and fsynced batch by batch. A rerun reads the ids already there and skips them; a line cut short
by a crash is dropped and reported. The training files (`sft_{train,val}.jsonl`,
`preferences_{train,val}.jsonl`) are rewritten from the logs after every run, so they never hold
half a record.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable, KeysView, Sequence
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

PACKAGED_PROMPTS_DIR = Path(__file__).parent / "prompt_sets"
CRITIQUES_FILE = "critiques.jsonl"
COMPARISONS_FILE = "comparisons.jsonl"
DATA_MANIFEST_FILE = "manifest.json"  # what the data dir holds and where it came from


@dataclass(frozen=True)
class PromptRecord:
    id: str
    prompt: str
    category: str = ""
    set: str = ""


def resolve_packaged(name_or_path: str | Path, directory: Path, suffix: str, what: str) -> Path:
    """A file shipped in `directory` by stem ("default", "red_team"), or any path to such a file."""
    packaged = directory / f"{name_or_path}{suffix}"
    if packaged.is_file():
        return packaged
    path = Path(name_or_path).expanduser()
    if not path.is_file():
        available = sorted(p.stem for p in directory.glob(f"*{suffix}"))
        raise FileNotFoundError(f"{what} {str(name_or_path)!r} is neither a file nor one of the packaged {available}")
    return path


def load_prompts(sources: Sequence[str], limit: int | None = None) -> list[PromptRecord]:
    """Prompts from packaged sets ("red_team", "helpful") or JSONL files of {"id"?, "prompt", "category"?}.

    A record without an id gets `<file stem>-<line>`; ids must be unique across all sources
    (they key resumption). Corrupt lines are skipped, counted and reported with line numbers.
    """
    prompts: list[PromptRecord] = []
    seen: dict[str, str] = {}
    for source in sources:
        path = resolve_packaged(source, PACKAGED_PROMPTS_DIR, ".jsonl", "prompt set")
        bad: list[int] = []
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                text = record["prompt"]
            except (json.JSONDecodeError, KeyError, TypeError):
                bad.append(lineno)
                continue
            if not isinstance(text, str) or not text.strip():
                bad.append(lineno)
                continue
            prompt_id = str(record.get("id") or f"{path.stem}-{lineno}")
            if prompt_id in seen:
                raise ValueError(f"{path}:{lineno}: prompt id {prompt_id!r} already used in {seen[prompt_id]}")
            seen[prompt_id] = f"{path}:{lineno}"
            prompts.append(
                PromptRecord(
                    prompt_id, text.strip(), str(record.get("category", "")), str(record.get("set", path.stem))
                )
            )
        if bad:
            log.warning("%s: skipped %d corrupt prompt line(s) (first at lines %s)", path, len(bad), bad[:5])
    return prompts[:limit] if limit is not None else prompts


class AppendOnlyLog:
    """JSONL records keyed by "id"; `done` holds the ids already written by earlier runs."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.corrupt_lines = 0
        self._records: dict[str, dict] = {}
        if self.path.is_file():
            self._load()

    def _load(self) -> None:
        raw = self.path.read_bytes()
        if raw and not raw.endswith(b"\n"):
            # A crash mid-write leaves a partial last line; cut it so appends start on a fresh line.
            keep = raw.rfind(b"\n") + 1
            log.warning(
                "%s: dropping a partial last record (%d bytes) left by an interrupted run", self.path, len(raw) - keep
            )
            with self.path.open("r+b") as f:
                f.truncate(keep)
            raw = raw[:keep]
        for lineno, line in enumerate(raw.decode("utf-8").splitlines(), 1):
            try:
                record = json.loads(line)
                self._records[str(record["id"])] = record
            except (json.JSONDecodeError, KeyError, TypeError):
                self.corrupt_lines += 1
                log.warning("%s:%d: corrupt record skipped", self.path, lineno)

    @property
    def done(self) -> KeysView[str]:
        """Ids already logged: a live view (O(1) membership, no copy per lookup)."""
        return self._records.keys()

    def records(self) -> list[dict]:
        return list(self._records.values())

    def append(self, records: Iterable[dict]) -> None:
        records = list(records)
        with self.path.open("a", encoding="utf-8") as f:
            for record in records:
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
        for record in records:
            self._records[str(record["id"])] = record


def split_by_id(records: Sequence[dict], val_fraction: float) -> tuple[list[dict], list[dict]]:
    """Deterministic train/val split from a hash of each id (stable as the logs grow); at least
    one validation record whenever there are two or more, because the stages need a val set."""

    def bucket(record: dict) -> float:
        return int(hashlib.sha256(str(record["id"]).encode()).hexdigest()[:8], 16) / 0xFFFFFFFF

    ordered = sorted(records, key=bucket)
    n_val = sum(bucket(r) < val_fraction for r in ordered)
    if n_val == 0 and len(ordered) >= 2 and val_fraction > 0:
        n_val = 1
    return ordered[n_val:], ordered[:n_val]


def write_jsonl_atomic(records: Iterable[dict], path: Path) -> int:
    tmp = path.with_suffix(path.suffix + ".tmp")
    count = 0
    with tmp.open("w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
            count += 1
    tmp.replace(path)
    return count


def sft_record(critique: dict) -> dict:
    """(prompt, final revision) in the HF `messages` format `lmforge.data.chat` reads, plus the audit keys."""
    return {
        "id": critique["id"],
        "messages": [
            {"role": "user", "content": critique["prompt"]},
            {"role": "assistant", "content": critique["revision"]},
        ],
        "principles": critique["principles"],
        "set": critique.get("set", ""),
    }


def write_splits(records: Sequence[dict], data_dir: Path, name: str, val_fraction: float) -> dict[str, int]:
    """`<name>_train.jsonl` and `<name>_val.jsonl`, split by id; returns their record counts."""
    train, val = split_by_id(records, val_fraction)
    return {
        f"{name}_train": write_jsonl_atomic(train, data_dir / f"{name}_train.jsonl"),
        f"{name}_val": write_jsonl_atomic(val, data_dir / f"{name}_val.jsonl"),
    }


def write_sft_files(critiques: Sequence[dict], data_dir: Path, val_fraction: float) -> dict[str, int]:
    usable = [c for c in critiques if c["revision"].strip()]
    counts = write_splits([sft_record(c) for c in usable], data_dir, "sft", val_fraction)
    return counts | {"empty_revisions": len(critiques) - len(usable)}


def preference_record(comparison: dict) -> dict:
    """The `{"prompt", "chosen", "rejected"}` shape `lmforge.data.preference` reads, plus the principle."""
    return {
        "id": comparison["id"],
        "prompt": comparison["prompt"],
        "chosen": comparison["chosen"],
        "rejected": comparison["rejected"],
        "principle": comparison["principle"],
        "preference_probability": comparison["preference_probability"],
    }


def write_preference_files(comparisons: Sequence[dict], data_dir: Path, val_fraction: float) -> dict[str, int]:
    decided = [c for c in comparisons if c.get("chosen") is not None]
    counts = write_splits([preference_record(c) for c in decided], data_dir, "preferences", val_fraction)
    return counts | {"undecided_comparisons": len(comparisons) - len(decided)}
