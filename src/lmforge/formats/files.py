"""Atomic file writes and JSONL.gz helpers.

Every artifact is written to ``<name>.tmp-<pid>`` and renamed into place, so a process
killed mid-write leaves either the old file, no file, or a stray tmp file that the
next run ignores and overwrites - never a half-written artifact that looks finished.
"""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary sibling path; rename it onto ``path`` if the block succeeds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_json(path: Path, obj: Any, sort_keys: bool = True) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=sort_keys, default=str) + "\n")


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def write_jsonl_gz(path: Path, rows: Iterable[dict[str, Any]], compresslevel: int = 6) -> int:
    """Write rows atomically; mtime=0 and no embedded file name (it would be the tmp name, with the
    pid) keep the gzip bytes reproducible across runs. Scratch files that are read once can pass
    ``compresslevel=1`` (several times faster to write, about 1.3x larger)."""
    count = 0
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as raw:
            gz = gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0, compresslevel=compresslevel)
            with gz:
                for row in rows:
                    gz.write((json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8", "surrogatepass"))
                    count += 1
    return count


def iter_jsonl_gz(path: Path) -> Iterator[dict[str, Any]]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def open_maybe_gzip(path: Path) -> IO[bytes]:
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")
