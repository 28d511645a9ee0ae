"""An evaluation's `report.json`: metrics per task, the checkpoint it scored, and the release
gate's verdict. Written by `python src/eval.py`; read by the next evaluation (as the parent
report) and by the export's release gate.

Keys the gate decides on (`lmforge.eval.gate`): `metrics` {task: {metric: value}}, `stats`
{task: {metric: {n, mean, stderr, ci, interval}}}, `lineage` [{path, stage}] root first,
`comparisons` {parent, baseline} (summaries of those reports), `binding` {checkpoint_sha256,
suite_sha256, policy_sha256, digest, ...}; `sandbox` records the code sandbox's isolation.
Reports from before these keys read fine and fail the export's gate (they are bound to nothing).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lmforge.formats import read_versioned_json, write_versioned_json

EVAL_REPORT_FORMAT = "lmforge-eval-report/1"
# Reports written before the tag existed have no "version"; their keys are version 1's, and the
# export's release gate must keep accepting the verdicts already on disk.
LEGACY_EVAL_REPORT_FORMATS = (None,)
REPORT_FILE = "report.json"


def write_report(out_dir: Path, report: dict[str, Any]) -> Path:
    path = Path(out_dir) / REPORT_FILE
    write_versioned_json(path, "version", EVAL_REPORT_FORMAT, report, end="")
    return path


def read_report(report: str | Path) -> dict[str, Any]:
    """`report` is a report.json or the directory holding one."""
    path = Path(report)
    path = path if path.is_file() else path / REPORT_FILE
    if not path.exists():
        raise FileNotFoundError(f"no evaluation report at {path}; run `python src/eval.py ckpt=...` first")
    return read_versioned_json(path, "version", EVAL_REPORT_FORMAT, LEGACY_EVAL_REPORT_FORMATS)
