"""One module per on-disk format, each with a version tag, one writer and one reader:

- `corpus`: the curated corpus (`<domain>/part-*.jsonl.gz` + `manifest.json`);
- `shards`: token shards (webdataset tars) and their manifest;
- `checkpoint_meta`: the `manifest.json` beside checkpoints: a run directory's and an HF export's;
- `eval_report`: the `report.json` of an evaluation (and the gate's verdict in it).

Every package that reads or writes one of these imports it from here, so a format has one owner.
A reader refuses another version with one line naming the file and both versions; files from
before the tags (see each module's LEGACY_*) read as version 1.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lmforge.formats.files import atomic_path


class FormatVersionError(ValueError):
    """A file was written in another (older, newer or foreign) version of a format."""


def check_version(path: Path | str, found: object, expected: str, legacy: tuple[object, ...] = ()) -> None:
    """Refuse a file of another version. `legacy` lists tags (None: no tag at all) that files
    written before this tag existed carry; their layout is this version's, so they read as it."""
    if found == expected or found in legacy:
        return
    shown = "no version tag" if found is None else f"version {found!r}"
    raise FormatVersionError(
        f"{path}: expected format version {expected!r}, found {shown}; rewrite it with this lmforge's command"
    )


def write_versioned_json(
    path: Path, version_key: str, version: str, content: dict[str, Any], end: str = "\n", **dumps_options: Any
) -> dict[str, Any]:
    """`content` with its version tag, atomically; returns what was written. `end` and
    `dumps_options` (json.dumps') keep each format's bytes as they were before the tags."""
    # Tag first; a tag in `content` (read back from an older file) never survives a rewrite.
    data = {version_key: version, **{k: v for k, v in content.items() if k != version_key}}
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, **{"indent": 2, "default": str, **dumps_options}) + end)
    return data


def read_versioned_json(path: Path, version_key: str, version: str, legacy: tuple[object, ...] = ()) -> dict[str, Any]:
    data = json.loads(path.read_text())
    check_version(path, data.get(version_key), version, legacy)
    return data
