"""The `manifest.json` written next to checkpoints, in two kinds:

- a run directory's (RUN_FORMAT): what a training (or CAI) run was, where its best and last
  checkpoints are, its tokenizer fingerprint and parent. Written when a run ends; read to resolve
  a run directory to a checkpoint, to skip finished sub-runs, and to trace lineage.
- an HF export's (EXPORT_FORMAT): model config, dtype, quantization, files, weight hashes, the
  release gate's record and the parent run's manifest. Written by `lmforge.hf.export_hf` and
  `serving.export`; read when an export is loaded and by the quantization quality report.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lmforge.formats import read_versioned_json, write_versioned_json

MANIFEST = "manifest.json"
RUN_FORMAT = "lmforge-run/1"
# Run manifests written before the tag existed have no "version"; their keys are version 1's.
LEGACY_RUN_FORMATS = (None,)
EXPORT_FORMAT = "lmforge-export/1"
# Export manifests written before the tag existed have no "version"; their keys are version 1's.
LEGACY_EXPORT_FORMATS = (None,)


def write_run_manifest(run_dir: Path, manifest: dict[str, Any]) -> Path:
    path = Path(run_dir) / MANIFEST
    write_versioned_json(path, "version", RUN_FORMAT, manifest)
    return path


def read_run_manifest(run_dir: Path | str) -> dict[str, Any]:
    """The run's manifest, or {} for a directory without one; another version is refused."""
    path = Path(run_dir) / MANIFEST
    return read_versioned_json(path, "version", RUN_FORMAT, LEGACY_RUN_FORMATS) if path.is_file() else {}


def write_export_manifest(hf_dir: Path, manifest: dict[str, Any]) -> Path:
    path = Path(hf_dir) / MANIFEST
    write_versioned_json(path, "version", EXPORT_FORMAT, manifest, ensure_ascii=False)
    return path


def read_export_manifest(hf_dir: Path | str) -> dict[str, Any]:
    """The export's manifest, or {} for an HF folder from elsewhere (the Hub); another version is refused."""
    path = Path(hf_dir) / MANIFEST
    return read_versioned_json(path, "version", EXPORT_FORMAT, LEGACY_EXPORT_FORMATS) if path.is_file() else {}
