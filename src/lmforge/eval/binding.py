"""What ties an evaluation report to what it scored: the checkpoint's content hash, the suite's
hash (task options and benchmark file contents), the lineage, and a digest over the numbers.

Export recomputes the checkpoint hash with `content_sha256` (the same function) and refuses a
report that scored other weights. The digest catches a report edited after evaluation by hand
or by a script that does not recompute it; it is not a signature (anyone who can run this code
can recompute it), so a report is only as trustworthy as the directory it lives in.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from lmforge.checkpoint import read_metadata, resolve_checkpoint

MAX_LINEAGE = 64


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def content_sha256(path: str | Path) -> str:
    """sha256 of a file, or of a directory's files (relative names + contents) in sorted order."""
    path = Path(path)
    if path.is_file():
        return sha256_file(path)
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(str(file.relative_to(path)).encode())
        digest.update(sha256_file(file).encode())
    return digest.hexdigest()


def checkpoint_sha256(ckpt: str | Path) -> tuple[Path, str]:
    """(the artifact `ckpt` resolves to, its content hash): what export checks a report against."""
    resolved = resolve_checkpoint(ckpt).resolve()
    return resolved, content_sha256(resolved)


def checkpoint_lineage(ckpt: str | Path) -> list[dict[str, Any]]:
    """[{path, stage}] from the lineage's first checkpoint to `ckpt`, following each checkpoint's
    recorded parent. An ancestor that no longer exists ends the walk with `missing: true`."""
    chain: list[dict[str, Any]] = []
    seen: set[Path] = set()
    path: str | Path | None = ckpt
    while path and len(chain) < MAX_LINEAGE:
        try:
            resolved = resolve_checkpoint(path).resolve()
            meta = read_metadata(resolved)
        except (FileNotFoundError, KeyError, OSError):
            chain.append({"path": str(path), "stage": None, "missing": True})
            break
        if resolved in seen:
            break
        seen.add(resolved)
        chain.append({"path": str(resolved), "stage": meta.get("stage")})
        path = meta.get("parent")
    return chain[::-1]


def parent_step(ckpt: str | Path, lineage: list[dict[str, Any]]) -> dict[str, Any]:
    """The lineage step `ckpt`'s parent report must have scored (`lineage` from `checkpoint_lineage`,
    at least two steps): the step before the last, where checkpoints inside the run directory
    `ckpt` names are that run's own steps and count as one. A CAI run dir ends in its DPO sub-run,
    whose parent is its SFT sub-run: both lie inside it, so its parent is the checkpoint the run
    started from (`init_from`), as its manifest says."""
    root = Path(ckpt).expanduser()
    if root.is_dir():
        root = root.resolve()
        for step in reversed(lineage[:-1]):
            if not Path(step["path"]).expanduser().resolve().is_relative_to(root):
                return step
    return lineage[-2]


def canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()


def suite_sha256(task_options: dict[str, dict], data_paths: dict[str, Path], limit: int | None) -> str:
    """Hash of what was run: each task's full options (paths replaced by their files' contents,
    so the same benchmark on another machine hashes the same) and the global `limit`."""
    options = {}
    for task, values in task_options.items():
        values = dict(values)
        for key in ("path", "prompts"):
            if values.get(key) and Path(values[key]).exists():
                values[key] = content_sha256(values[key])
        options[task] = values
    data = {task: content_sha256(path) for task, path in data_paths.items() if Path(path).exists()}
    return hashlib.sha256(canonical({"tasks": options, "data": data, "limit": limit})).hexdigest()


DIGEST_KEYS = ("binding", "metrics", "stats", "lineage", "comparisons", "stage", "suite")


def report_digest(report: dict) -> str:
    """sha256 over the parts of a report the gate decides on (binding minus its own digest)."""
    body = {k: report.get(k) for k in DIGEST_KEYS}
    body["binding"] = {k: v for k, v in (report.get("binding") or {}).items() if k != "digest"}
    return hashlib.sha256(canonical(body)).hexdigest()


def report_summary(report: dict, report_path: str | Path, named: bool = False) -> dict[str, Any]:
    """What a child report keeps of its parent's or baseline's report (no nested comparisons)."""
    binding = report.get("binding") or {}
    return {
        "report": str(report_path),
        "named": named,
        "label": report.get("label"),
        "stage": report.get("stage"),
        "checkpoint_sha256": binding.get("checkpoint_sha256"),
        "suite_sha256": binding.get("suite_sha256"),
        "lineage_length": len(report.get("lineage") or []),
        "metrics": report.get("metrics") or {},
        "stats": report.get("stats") or {},
    }
